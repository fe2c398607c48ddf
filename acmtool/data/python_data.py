"""Data given as Python objects (`acmtool.convert(model, budget, data=...)`), in the spirit of
NNCF's `nncf.Dataset(loader, transform_fn)`:

- a `torch.utils.data.DataLoader`: each element is a batch, split here into its samples;
- any other iterable of samples: a tensor (one image, one feature vector), a dict of tensors (one
  text's token ids, unbatched), an `(inputs, label)` pair, or a string (text: give `tokenizer`);
- a Hugging Face `datasets.Dataset` or `DatasetDict` (train split; test split as the test set):
  text columns are read as tables are (acmtool.data.tables: columns by name or guessed, ClassLabel
  names kept); already tokenised rows are samples like any dict.

`transform` (optional) maps each element first. The samples are held in memory: calibration
data, thousands of samples, not a training set of millions.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from acmtool.data.split import subset_indices
from acmtool.data.task_data import Loaded, PadCollate, StackCollate
from acmtool.errors import AcmInputError


class ListData(Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def _batch_size(inputs) -> int:
    if isinstance(inputs, torch.Tensor):
        return inputs.shape[0]
    return next(iter(inputs.values())).shape[0]


def _unbatch(element) -> list:
    """A DataLoader's batch -> [(inputs, label)] per sample."""
    if isinstance(element, (tuple, list)) and len(element) == 1:  # a TensorDataset of inputs alone
        element = element[0]
    inputs, labels = element if isinstance(element, (tuple, list)) and len(element) == 2 else (element, None)
    if not isinstance(inputs, (torch.Tensor, dict)):
        raise AcmInputError(f"data: a DataLoader batch must be a tensor, a dict of tensors or (inputs, labels); got "
                            f"{type(inputs).__name__}")
    n = _batch_size(inputs)
    out = []
    for i in range(n):
        x = inputs[i] if isinstance(inputs, torch.Tensor) else {k: v[i] for k, v in inputs.items()}
        out.append((x, -1 if labels is None else int(labels[i])))
    return out


def _sample(element, tokenizer, max_length: int):
    """One sample -> (inputs, label)."""
    label = -1
    if isinstance(element, (tuple, list)) and len(element) == 1:
        element = element[0]
    if isinstance(element, (tuple, list)) and len(element) == 2 and not isinstance(element[0], (int, float)):
        element, label = element
        label = int(label) if label is not None else -1
    if isinstance(element, dict) and any(isinstance(v, str) for v in element.values()):
        # a row of a table or a datasets.Dataset: the text column by its name (as for table files)
        from acmtool.data.tables import LABEL_GUESSES, TEXT_GUESSES
        texts = [k for k in TEXT_GUESSES if isinstance(element.get(k), str)] or \
            [k for k, v in element.items() if isinstance(v, str)]
        labels = [k for k in LABEL_GUESSES if isinstance(element.get(k), int)]
        element, label = element[texts[0]], int(element[labels[0]]) if labels else label
    if isinstance(element, str):
        if tokenizer is None:
            raise AcmInputError("data: text samples need the model's tokenizer: acmtool.convert(..., tokenizer=tok)")
        enc = tokenizer(element, truncation=True, max_length=max_length)
        from acmtool.data.text import MODEL_KEYS
        element = {k: torch.tensor(enc[k], dtype=torch.long) for k in MODEL_KEYS if k in enc}
    if isinstance(element, dict):
        element = {k: torch.as_tensor(v) for k, v in element.items()}
    elif not isinstance(element, torch.Tensor):
        raise AcmInputError(f"data: a sample must be a tensor, a dict of tensors, a string or (inputs, label); got "
                            f"{type(element).__name__}")
    return element, label


def _has_text(ds) -> bool:
    return len(ds) > 0 and any(isinstance(v, str) for v in ds[0].values())


def from_python(data, *, tokenizer=None, transform: Optional[Callable] = None, max_samples: Optional[int] = None,
                seed: int = 0, max_length: int = 128, text_column: Optional[str] = None,
                label_column: Optional[str] = None) -> Loaded:
    """The samples of `data` (see the module's docstring), checked and ready for load_data's split."""
    from acmtool.data.table_readers import is_datasets_object
    if is_datasets_object(data):
        whole = data
        if isinstance(data.column_names, dict):  # a DatasetDict: its train split (and test split)
            if "train" not in data:
                raise AcmInputError(f"data: a DatasetDict with the splits {', '.join(data) or 'none'} and no "
                                    f"'train'; pass the split itself (dataset['validation'])")
            data = data["train"]
        if transform is None and _has_text(data):
            from acmtool.data.tables import load_datasets_object
            return load_datasets_object(whole, tokenizer, max_samples, seed, max_length, text_column, label_column)
    elif text_column is not None or label_column is not None:
        raise AcmInputError("data: text_column and label_column name the columns of a table or a datasets.Dataset; "
                            f"this data is a {type(data).__name__}")
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise AcmInputError(f"data: expected a DataLoader, a datasets.Dataset or an iterable of samples; got "
                            f"{type(data).__name__}")
    items = []
    for element in data:
        if transform is not None:
            element = transform(element)
        if isinstance(data, DataLoader):
            items.extend(_unbatch(element))
        else:
            items.append(_sample(element, tokenizer, max_length))
    if not items:
        raise AcmInputError("data: it holds no samples")
    first = items[0][0]
    if isinstance(first, dict):
        if "input_ids" not in first:
            raise AcmInputError(f"data: dict samples must hold input_ids (token ids); got keys {sorted(first)}")
        pad = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
        collate, kind = PadCollate(pad), "text"
    else:
        shapes = {tuple(x.shape) for x, _ in items}
        if len(shapes) > 1:
            raise AcmInputError(f"data: tensor samples must share one shape; got {sorted(shapes)[:3]}")
        collate, kind = StackCollate(), "image" if first.dim() == 3 else "array"
    keep = subset_indices(len(items), max_samples, seed)
    items = [items[i] for i in keep]
    labels = sorted({y for _, y in items if y >= 0})  # a negative label: none (as -100 often means)
    num_classes = labels[-1] + 1 if labels else None
    return Loaded(ListData(items), num_classes, None, kind, collate)
