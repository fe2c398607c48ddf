"""Switches that act on every ACM of a model at once."""
from __future__ import annotations

import contextlib
from typing import Optional

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


def budget_shift(model: nn.Module, budget: float, warn: bool = True) -> float:
    """The shift of every gate's logits that runs `model` at `budget`, from the table its conversion
    calibrated (acmtool.layers.budget_knob); sets nothing. Outside the calibrated range, on a static
    model or on a model without a table: an AcmInputError. Far below the trained budget: a warning."""
    import warnings

    import torch

    from acmtool.errors import AcmInputError
    from acmtool.config import FAR_FROM_TRAINED
    from acmtool.layers.budget_knob import budget_range, shift_at
    info = getattr(model, "acmtool_info", {}) or {}
    if info.get("static"):
        raise AcmInputError("a static model runs one fixed k per block: it has no budget knob; convert without "
                            "--static for a model whose budget can move")
    table = info.get("budget_table")
    if table is None:
        raise AcmInputError("this model has no budget table (it was not trained by acmtool convert, or by a version "
                            "before the budget knob); convert it again to get one")
    lo, hi = budget_range(table)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not lo - 1e-9 <= budget <= hi + 1e-9:
        raise AcmInputError(f"budget {budget!r}: this model's calibrated range is [{lo:.3g}, {hi:.3g}]")
    trained, trained_range = info.get("budget"), info.get("budget_range")
    if warn and trained_range is not None:  # convert --budget-range: trained for each budget in it
        if not trained_range[0] - 0.02 <= budget <= trained_range[1] + 0.02:
            warnings.warn(f"budget {budget:g} lies outside the range this model was trained for "
                          f"({trained_range[0]:g} to {trained_range[1]:g}): it may be less accurate there than a "
                          f"model converted at {budget:g}", stacklevel=3)
    elif warn and trained is not None and budget < trained - FAR_FROM_TRAINED:  # more compute only helps
        warnings.warn(f"budget {budget:g} is {trained - budget:.2f} below the budget the gates were trained at "
                      f"({trained:g}): a model converted at {budget:g} will be more accurate", stacklevel=3)
    return float(shift_at(table, torch.tensor(float(budget))))


def set_budget(model: nn.Module, budget: Optional[float]) -> float:
    """Run `model` at `budget` from now on (None: the budget it was trained at); see budget_shift.
    Budget-conditioned gates (convert --budget-range) are told the budget too. Returns the shift."""
    shift = budget_shift(model, budget) if budget is not None else None
    trained = (getattr(model, "acmtool_info", {}) or {}).get("budget")
    delta = budget - trained if budget is not None and trained is not None else None
    set_knob([m for _, m in acm_modules(model)], shift, delta)
    return shift or 0.0


def set_knob(acms, shift, delta) -> None:
    """Every gate's logit shift and, for budget-conditioned gates, the budget asked minus the trained
    one (None, None: the trained budget). Floats, or tensors while the export traces the budget."""
    for m in acms:
        m.budget_shift = shift
        m.gate.budget_delta = delta


def knob_state(acms) -> list:
    return [(m.budget_shift, m.gate.budget_delta) for m in acms]


def restore_knob(acms, state: list) -> None:
    for m, (shift, delta) in zip(acms, state):
        m.budget_shift, m.gate.budget_delta = shift, delta


@contextlib.contextmanager
def at_budget(model: nn.Module, budget: Optional[float]):
    """set_budget for a `with` block; the previous settings come back after it."""
    acms = [m for _, m in acm_modules(model)]
    saved = knob_state(acms)
    try:
        set_budget(model, budget)
        yield model
    finally:
        restore_knob(acms, saved)
