"""Seeded subsets and train/val splits: the same seed always picks the same samples."""
from __future__ import annotations

from typing import Optional

import numpy as np

# Separate streams so that changing max_samples does not change how a given set is split.
_SUBSET_STREAM, _SPLIT_STREAM = 0, 1


def subset_indices(n: int, max_samples: Optional[int], seed: int) -> np.ndarray:
    """All of range(n), or a seeded random max_samples of them (sorted, so file order is kept)."""
    if max_samples is None or max_samples >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, _SUBSET_STREAM])
    return np.sort(rng.choice(n, size=max_samples, replace=False))


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded shuffle cut into train and val; val gets at least one sample when there are two."""
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)  # never an empty train set
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())
