"""Two models measured on the same samples: the difference and its paired standard error.

When both models see the same n samples, what decides whether a difference in accuracy is real is
how many samples one gets right and the other wrong (McNemar), not the two accuracies' own spread:
se = sqrt(a_only + b_only - (a_only - b_only)^2 / n) / n, the standard error of the mean of the
per-sample differences (1, 0 or -1). For a per-sample value such as cosine similarity, the same
idea: the mean of the per-sample differences and its standard error std(a - b, ddof=1) / sqrt(n).
"""
from __future__ import annotations

import math
from typing import Optional

import torch


def _same_samples(a: torch.Tensor, b: torch.Tensor, what: str) -> int:
    if a.dim() != 1 or a.shape != b.shape:
        raise ValueError(f"{what}: a and b must hold one value per sample, for the same samples "
                         f"(got shapes {tuple(a.shape)} and {tuple(b.shape)})")
    if len(a) == 0:
        raise ValueError(f"{what}: no samples")
    return len(a)


def paired_accuracy_difference(a_correct: torch.Tensor, b_correct: torch.Tensor) -> dict:
    """acc(a) - acc(b) over the same samples (bool tensors: whether each model got each sample
    right), its paired standard error, the samples only a gets right, only b, and n."""
    n = _same_samples(a_correct, b_correct, "paired_accuracy_difference")
    a, b = a_correct.bool(), b_correct.bool()
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    se = math.sqrt(max(a_only + b_only - (a_only - b_only) ** 2 / n, 0.0)) / n
    return {"diff": (a_only - b_only) / n, "se": se, "a_only": a_only, "b_only": b_only, "n": n}


def paired_mean_difference(a: torch.Tensor, b: torch.Tensor) -> dict:
    """mean(a - b) over the same samples (per-sample values, e.g. cosine similarity) and its
    standard error std(a - b, ddof=1) / sqrt(n); None for one sample, whose spread is unknown."""
    n = _same_samples(a, b, "paired_mean_difference")
    d = a.double() - b.double()
    se: Optional[float] = float(d.std(correction=1)) / math.sqrt(n) if n > 1 else None
    return {"diff": float(d.mean()), "se": se, "n": n}
