"""A .npz with `x` (model inputs, one row per sample) and optional `y` (int labels)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from acmtool.data.split import subset_indices
from acmtool.data.task_data import Loaded, StackCollate
from acmtool.errors import AcmInputError


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as f:  # never unpickle object arrays from a user file
            if "x" not in f.files:
                raise AcmInputError(f"{path}: no array named x (it holds {', '.join(f.files) or 'nothing'}); "
                                    f"save the model inputs as x, e.g. np.savez(path, x=inputs, y=labels)")
            x, y = f["x"], (f["y"] if "y" in f.files else None)
    except AcmInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise AcmInputError(f"{path}: not a readable .npz of numeric arrays ({str(e).splitlines()[0][:200]})") \
            from None
    _check(path, x, y)
    return x, y


def _check(path: Path, x: np.ndarray, y) -> None:
    if x.ndim == 0 or len(x) == 0:
        raise AcmInputError(f"{path}: x is empty; it must hold one row of model inputs per sample")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise AcmInputError(f"{path}: x has dtype {x.dtype}; give numbers (float inputs or integer token ids)")
    if y is None:
        return
    if y.ndim != 1 or len(y) != len(x):
        raise AcmInputError(f"{path}: y has shape {y.shape}; it must hold one label per row of x ({len(x)})")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise AcmInputError(f"{path}: y must hold class indices (integers >= 0), found dtype {y.dtype}")


class ArrayData(Dataset):
    """Rows of x as tensors: float32 for real-valued inputs, int64 for token ids."""

    def __init__(self, x: np.ndarray, y):
        dtype = torch.float32 if np.issubdtype(x.dtype, np.floating) else torch.long
        self.x = torch.as_tensor(np.ascontiguousarray(x)).to(dtype)
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long) if y is not None else None

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i]) if self.y is not None else -1


def load_npz(path: Path, max_samples: Optional[int], seed: int) -> Loaded:
    x, y = read_npz(path)
    num_classes = int(y.max()) + 1 if y is not None else None  # from all of y, so a subset keeps it
    keep = subset_indices(len(x), max_samples, seed)
    data = ArrayData(x[keep], y[keep] if y is not None else None)
    return Loaded(data, num_classes, None, "array", StackCollate())
