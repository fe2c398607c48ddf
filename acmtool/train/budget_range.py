"""`convert --budget-range LO:HI`: one model fine-tuned for every budget of a range.

A model converted at one budget has gates trained to that budget's allocation and learners
fine-tuned to their choices there; the run-time knob (acmtool.layers.budget_knob) then moves every
gate by one global logit shift. That cannot give each block the share the budget's own allocation
would: on MiniLM a model trained at 0.5 (or fine-tuned over 0.25-1.0 with the shift alone) and
asked for 0.25 spent mean k 1.76 in its fifth MLP where a model converted at 0.25 spends 0.82, and
its mean cosine to the original was 0.889 against 0.918.

So with a range the gates read the budget (acmtool.layers.gate: budget-conditioned gates), and:
- gate pre-training takes each step's labels at its own budget (the loss-aware allocation at that
  budget over every block) and tells the gates that budget;
- fine-tuning runs each step at its own budget, told to the gates and trimmed by the knob's shift,
  so the learners and the rest of the model learn to work wherever the knob will put them. The
  shifts come from a budget table measured on the calibration batches at the start of fine-tuning
  and again at each quarter of it (fine-tuning moves the gates' inputs); a resumed run measures it
  again where it resumes. These tables only aim the steps, so they measure fewer tokens
  (REFRESH_TOKENS); the model's own table, measured after fine-tuning, is the full one.
Step budgets are spread over [LO, HI] (a golden-ratio sequence: any stretch of steps covers the
range) and depend only on the step, so a resumed run repeats them. Evenly by default; with
`--range-skew S` fine-tuning's budgets are LO + (HI - LO) * u**S, so more steps fall near LO, where
the learners have the most to make up for: with S = 2, 37 % of the steps lie within 0.1 of 0.25 on
0.25:1.0 (13 % evenly), 16 % within 0.1 of 0.75 (27 %).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from acmtool.errors import AcmInputError
from acmtool.layers.acm import acm_modules
from acmtool.layers.budget_knob import shift_at
from acmtool.layers.control import set_knob
from acmtool.train.budget_table import GRID, budget_table

GOLDEN = (math.sqrt(5) - 1) / 2
# Gate pre-training moves the gates' two budget directions at this times its learning rate (for
# Adam, the same as feeding them the budget's difference times this gain). At the plain rate they
# cannot learn what a budget asks: after DINOv2-112's pre-training over 0.25-1.0 (42 steps at 2e-2)
# no entry was above 0.36, and asking for 0.25 instead of the default 0.625 moved a gate's logits by
# at most 0.26 (16 test images, every gate), where that model's budget table shifts every gate by
# 10.3 logits: the knob's global shift did nearly all of it, and every block moved alike.
DIRECTION_LR_GAIN = 16.0
REFRESHES = 4  # budget tables measured per fine-tuning phase
# Tokens of a refresh's table. The full table (TABLE_TOKENS) took 500 s on the DINOv2-112 range
# model (one thread), four times per conversion; on 4096 tokens it took 124 s, and its shifts,
# measured on the full tokens, hit budgets 0.25-1.0 within 0.012 (the full table's: 0.003), small
# beside the 0.75 the steps spread over. A 0.1 grid (52 s) missed 0.9 by 0.1: near 1.0 the shift is
# far from linear in the budget, so the refreshes keep the 0.05 grid.
REFRESH_TOKENS = 4096
REPORTED = (0.25, 0.5, 0.75)  # besides the range's ends and the trained budget


def range_grid(lo: float, hi: float) -> tuple:
    """The knob's grid points inside [lo, hi], and its two ends."""
    return tuple(sorted({lo, hi, *(b for b in GRID if lo < b < hi)}))


def step_budget(lo: float, hi: float, step: int, seed: int, skew: float = 1.0) -> float:
    """The budget of fine-tuning step `step`: the same for a step whether or not the run resumed;
    skew > 1 puts more of the steps near lo."""
    u = (0.5 * (seed % 7919) / 7919 + step * GOLDEN) % 1.0
    return lo + (hi - lo) * u ** skew


def report_budgets(lo: float, hi: float, trained: float) -> list:
    return sorted({lo, hi, trained, *(b for b in REPORTED if lo < b < hi)})


class RangeTraining:
    """before_step of the fine-tuning phase: tells every gate the step's budget and sets its shift."""

    def __init__(self, model, batches: list, trained: float, budget_range: list, device, seed: int, log=print,
                 skew: float = 1.0):
        self.model, self.batches, self.trained, self.device = model, batches, trained, device
        self.lo, self.hi = budget_range
        self.seed, self.log, self.skew = seed, log, skew
        self.table: Optional[dict] = None
        self.measured_at = -1
        self.acms = [m for _, m in acm_modules(model)]

    def _measure(self, step: int) -> None:
        set_knob(self.acms, None, None)
        modes = [(m, m.training) for m in self.model.modules()]  # fine-tuning trains the ACMs only
        self.model.eval()
        try:
            table = budget_table(self.model, self.batches, self.trained, self.device,
                                 grid=range_grid(self.lo, self.hi), tokens=REFRESH_TOKENS)
        finally:
            for m, training in modes:
                m.training = training
        lo, hi = table["budgets"][0], table["budgets"][-1]
        if lo > self.lo + 0.02 or hi < self.hi - 0.02:
            raise AcmInputError(f"--budget-range {self.lo:g}:{self.hi:g}: these gates reach only {lo:.2f} to {hi:.2f} "
                                f"on the calibration data; narrow the range")
        self.table, self.measured_at = table, step
        skewed = "" if self.skew == 1 else \
            f"; fine-tuning budgets skewed towards {self.lo:g} (--range-skew {self.skew:g})"
        self.log(f"budget range: shifts measured for {len(table['budgets'])} budgets from {lo:.2f} to {hi:.2f} "
                 f"(step {step}){skewed}")

    def __call__(self, step: int, steps: int) -> None:
        every = max(1, math.ceil(steps / REFRESHES))
        if self.table is None or (step % every == 0 and step != self.measured_at):
            self._measure(step)
        b = step_budget(self.lo, self.hi, step, self.seed, self.skew)
        set_knob(self.acms, float(shift_at(self.table, torch.tensor(b))), b - self.trained)

    def finish(self) -> None:
        set_knob(self.acms, None, None)


def gate_param_groups(acms, lr: float) -> list:
    """The optimiser groups of gate pre-training with a range: the budget directions at
    DIRECTION_LR_GAIN x lr, the rest of the gates at lr."""
    gates = [m.gate for m in acms]
    directions = [p for g in gates for p in (g.budget_in, g.budget_out) if p is not None]
    ids = {id(p) for p in directions}
    rest = [p for g in gates for p in g.parameters() if id(p) not in ids]
    return [{"params": rest, "lr": lr}, {"params": directions, "lr": lr * DIRECTION_LR_GAIN}]


class GateRangeTraining:
    """before_step of gate pre-training with a range: each step's labels are the allocation at its
    own budget, and budget-conditioned gates are told that budget, so they learn to answer it."""

    def __init__(self, objective, acms, trained: float, budget_range: list, seed: int):
        self.objective, self.acms, self.trained = objective, list(acms), trained
        self.lo, self.hi = budget_range
        self.seed = seed + 7  # not the fine-tuning's sequence of budgets

    def __call__(self, step: int, steps: int) -> None:
        b = step_budget(self.lo, self.hi, step, self.seed)
        self.objective.budget = b
        set_knob(self.acms, None, b - self.trained)
