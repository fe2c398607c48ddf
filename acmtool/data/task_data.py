"""TaskData: what load_data hands the pipeline, and the collate functions that batch its items."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Transcripts:
    """What greedy decoding and the word error rate need of a speech dataset's tokenizer: the ids
    every transcript starts from (<|startoftranscript|>, language and task, <|notimestamps|>), the
    id that ends one, and ids -> text (special tokens dropped). A CTC model (wav2vec2) has no
    prompt: `blank` is its blank id, and decoding collapses its frames' argmax instead."""

    prompt: tuple
    end_id: int
    max_length: int  # the decoder's positions, prompt included
    decode: Callable[[list], str] = field(repr=False)
    blank: Optional[int] = None


@dataclass
class TaskData:
    """Train/val (and, for fashion-mnist, test) datasets of `(inputs, label)` items, label -1 = none.

    `collate(items)` gives `(model_inputs, labels)`: a tensor to call `model(x)` with, or a dict to
    call `model(**d)` with (text); labels a LongTensor.
    """

    train: Dataset
    val: Dataset
    num_classes: Optional[int]
    class_names: Optional[list]
    kind: str  # "image" | "text" | "array" | "audio"
    source: str
    collate: Callable = field(repr=False)
    test: Optional[Dataset] = None
    transcripts: Optional[Transcripts] = None  # speech with transcripts: scored by word error rate

    @property
    def labelled(self) -> bool:
        return self.num_classes is not None


class Loaded(NamedTuple):
    """One source, read and checked but not yet split: what each loader returns to load_data."""

    dataset: Dataset
    num_classes: Optional[int]
    class_names: Optional[list]
    kind: str
    collate: Callable
    test: Optional[Dataset] = None
    val: Optional[Dataset] = None  # a validation set of its own (a val/ folder): no random split then
    transcripts: Optional[Transcripts] = None


def _labels(items) -> torch.Tensor:
    return torch.tensor([int(label) for _, label in items], dtype=torch.long)


class StackCollate:
    """Tensors of one shape: stacked. A class, not a closure, so DataLoader workers can pickle it."""

    def __call__(self, items):
        return torch.stack([x for x, _ in items]), _labels(items)


class PadCollate:
    """Token dicts of varying length: right-padded to the longest in the batch."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items):
        longest = max(len(x["input_ids"]) for x, _ in items)
        batch = {}
        for key in items[0][0]:
            fill = self.pad_token_id if key == "input_ids" else 0  # masks and segment ids pad with 0
            out = torch.full((len(items), longest), fill, dtype=torch.long)
            for row, (x, _) in enumerate(items):
                out[row, : len(x[key])] = x[key]
            batch[key] = out
        return batch, _labels(items)
