"""Switches that act on every ACM of a model at once."""
from __future__ import annotations

import contextlib

import torch.nn as nn

from acmtool.config import IMPLS
from acmtool.layers.acm import acm_modules


@contextlib.contextmanager
def fixed_k(model: nn.Module, k: int):
    """Force every ACM to run k learners per token, clamped to each one's [min_k, N]."""
    acms = [m for _, m in acm_modules(model)]
    saved = [m.forced_k for m in acms]
    try:
        for m in acms:
            m.forced_k = max(m.min_k, min(int(k), m.num_learners))
        yield model
    finally:
        for m, s in zip(acms, saved):
            m.forced_k = s


def set_impl(model: nn.Module, impl: str) -> nn.Module:
    """Choose the gated-inference path of every ACM: 'grouped' (fast) or 'naive' (reference)."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}; got {impl!r}")
    for _, m in acm_modules(model):
        m.impl = impl
    return model


def apply_static_k(model: nn.Module, budget: float) -> None:
    """The static baseline: no gate; every token runs round(budget * N) learners (within [min_k, N])."""
    for _, m in acm_modules(model):
        m.forced_k = max(m.min_k, min(m.num_learners, round(budget * m.num_learners)))
