"""The run-time budget knob: one model, any budget in its calibrated range.

Every gate's logit for k gets -shift * k / N on top of what it learned (the same shift
calibrate_budget folds into the gates at conversion): a larger shift moves every token towards
fewer learners, a negative one towards more. The conversion measures, on its calibration data, the
shift that hits each budget of a grid (acmtool.train.budget_table); between grid points the shift is
interpolated linearly. The same interpolation runs in PyTorch (set_budget) and in the exported
graph (the ONNX model's `budget` input), written with torch ops so both compute it identically."""
from __future__ import annotations

import math

import torch


def check_table(table) -> tuple[list, list]:
    """(budgets, shifts) of a budget table: budgets rising in (0, 1], shifts finite and falling."""
    if not isinstance(table, dict) or not isinstance(table.get("budgets"), list) \
            or not isinstance(table.get("shifts"), list):
        raise ValueError("a budget table is {'budgets': [...], 'shifts': [...]}")
    budgets, shifts = table["budgets"], table["shifts"]
    if len(budgets) != len(shifts) or len(budgets) < 2:
        raise ValueError("a budget table needs as many shifts as budgets, and two or more of each")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in budgets + shifts):
        raise ValueError("a budget table holds finite numbers only")
    if not all(0 < a < b <= 1 for a, b in zip(budgets, budgets[1:])) or budgets[0] <= 0:
        raise ValueError("a budget table's budgets must rise strictly within (0, 1]")
    if not isinstance(table.get("conditioned", False), bool):
        raise ValueError("a budget table's 'conditioned' is true or false")
    # with budget-conditioned gates the shift only trims what the gates spend: it may go either way
    if not table.get("conditioned") and any(b > a for a, b in zip(shifts, shifts[1:])):
        raise ValueError("a budget table's shifts must not rise with the budget")
    return [float(b) for b in budgets], [float(s) for s in shifts]


def shift_at(table: dict, budget: torch.Tensor) -> torch.Tensor:
    """The shift for `budget` (a tensor), interpolated in the table; clamped to its range (the
    callers check the range where they can raise). Only Clamp, Sub, Mul and Sum: exports as is."""
    budgets, shifts = check_table(table)
    b = budget.to(torch.float32).reshape(()).clamp(budgets[0], budgets[-1])
    lo = torch.tensor(budgets[:-1], dtype=torch.float32)
    width = torch.tensor([hi - a for a, hi in zip(budgets, budgets[1:])], dtype=torch.float32)
    slope = torch.tensor([(s1 - s0) / (hi - a) for a, hi, s0, s1 in zip(budgets, budgets[1:], shifts, shifts[1:])],
                         dtype=torch.float32)
    step = torch.minimum(torch.relu(b - lo), width)  # how far b runs into each segment
    return shifts[0] + (slope * step).sum()


def budget_range(table: dict) -> tuple[float, float]:
    budgets, _ = check_table(table)
    return budgets[0], budgets[-1]
