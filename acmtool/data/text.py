"""Text: the model folder's tokenizer, and samples tokenised up front (fast, and errors come early)
into compact flat arrays."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from acmtool.data.split import subset_indices
from acmtool.data.task_data import Loaded, PadCollate
from acmtool.errors import AcmInputError

# One of these holds a vocabulary; without one, transformers quietly builds a tokenizer that knows
# only the special tokens and turns every word into [UNK].
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
               "sentencepiece.bpe.model", "sentencepiece.model")
# Only these reach the model: a tokenizer may also return offsets or special-token masks.
MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def load_tokenizer(model: torch.nn.Module, spec: dict):
    """AutoTokenizer from the Hugging Face folder the model came from, never from a hub."""
    path = spec.get("path") if spec.get("kind") == "hf" else None
    if not path:
        what = f"{spec.get('kind')} model" if spec.get("kind") != "hf" else "Hugging Face model built in Python"
        raise AcmInputError(f"text data needs the model's tokenizer, and this {what} has none; use a Hugging Face "
                            f"model folder with its tokenizer, or give a .npz of token ids as x")
    if not any((Path(path) / f).is_file() for f in VOCAB_FILES):
        raise AcmInputError(f"{path}: no usable tokenizer in the model folder (none of {', '.join(VOCAB_FILES)}); "
                            f"add the model's tokenizer files or give a .npz of token ids as x")
    try:
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError... for a folder without one
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise AcmInputError(f"{path}: no usable tokenizer in the model folder ({first}); add the tokenizer "
                            f"files (tokenizer.json or vocab) or give a .npz of token ids as x") from None
    if tokenizer is None or not callable(tokenizer):
        raise AcmInputError(f"{path}: no tokenizer in the model folder; give a .npz of token ids as x")
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise AcmInputError(f"{path}: the tokenizer has no vocabulary besides its special tokens; add the "
                            f"model's tokenizer files or give a .npz of token ids as x")
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab_size, int) and len(tokenizer) > vocab_size:
        raise AcmInputError(f"{path}: the tokenizer has {len(tokenizer)} tokens but the model embeds only "
                            f"{vocab_size}; the tokenizer belongs to another model")
    return tokenizer


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def read_lines(path: Path) -> list:
    """One sample per non-blank line (read a line at a time: only the stripped lines are kept)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln for ln in (raw.strip() for raw in f) if ln]
    except UnicodeDecodeError as e:
        raise AcmInputError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8, one sample a line") \
            from None
    except OSError as e:
        raise AcmInputError(f"{path}: cannot be read ({e.strerror})") from None
    if not lines:
        raise AcmInputError(f"{path}: no text in it; give one sample per line")
    return lines


class TokenData(Dataset):
    """Token dicts of 1-D LongTensors (unpadded; the collate pads per batch) with their labels.

    Tokenised up front (errors come early) in chunks, into one flat array per key: about 6 bytes a
    token, so a million sentences fit where a tensor per sample would not."""

    CHUNK = 2048  # texts per tokenizer call

    def __init__(self, texts: Sequence[str], labels: Optional[Sequence[int]], tokenizer, max_length: int):
        limit = min(max_length, getattr(tokenizer, "model_max_length", max_length) or max_length)
        parts, lengths, self.keys = {}, [], None
        for start in range(0, len(texts), self.CHUNK):
            enc = tokenizer(list(texts[start:start + self.CHUNK]), truncation=True, max_length=limit)
            if self.keys is None:
                self.keys = [k for k in MODEL_KEYS if k in enc]
            lengths += [len(ids) for ids in enc["input_ids"]]
            for k in self.keys:  # ids fit int32; masks and segment ids are small
                dtype = np.int32 if k == "input_ids" else np.int8
                parts.setdefault(k, []).append(np.fromiter((t for row in enc[k] for t in row), dtype=dtype))
        self.keys = self.keys or ["input_ids"]
        self.flat = {k: np.concatenate(parts[k]) if k in parts else np.zeros(0, np.int32) for k in self.keys}
        self.offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        self.labels = list(labels) if labels is not None else [-1] * len(texts)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> tuple[dict, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        a, b = self.offsets[i], self.offsets[i + 1]
        return {k: torch.from_numpy(self.flat[k][a:b].astype(np.int64)) for k in self.keys}, self.labels[i]


def load_text_file(path: Path, model, spec: dict, max_samples: Optional[int], seed: int,
                   max_length: int) -> Loaded:
    lines = read_lines(path)
    tokenizer = load_tokenizer(model, spec)
    keep = subset_indices(len(lines), max_samples, seed)
    data = TokenData([lines[i] for i in keep], None, tokenizer, max_length)
    return Loaded(data, None, None, "text", PadCollate(pad_id(tokenizer)))
