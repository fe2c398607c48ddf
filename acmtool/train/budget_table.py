"""The budget table of a converted model: for each budget of a grid, the shift of every gate's
logits (acmtool.layers.budget_knob) that hits it on the calibration data. Measured after the final
calibration, so the trained budget sits at shift 0; the knob interpolates between grid points.

The grid is walked outwards from the trained budget, each point's search starting from the gate
inputs measured at its neighbour's shift: one pass over the calibration batches per point, a
second only where shifting the early gates moved the later ones' inputs too far."""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from acmtool.layers.acm import acm_modules
from acmtool.layers.control import knob_state, restore_knob, set_knob
from acmtool.train.calibrate_budget import _gate_inputs, _spent, gate_logits
from acmtool.train.calibration_rows import batch_size, cap_tokens

GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 0.05 ... 1.0
LIMIT = 50.0  # the extra shifts searched: beyond it every gate already makes its extreme choice
TOLERANCE = 0.02  # a grid point enters the table when its shift hits it this closely
# Tokens enough to measure a budget to far better than TOLERANCE: a Whisper batch of 32 holds 48000
# encoder tokens, so its table ran 8 batches per grid point (over 25 minutes on 2 cores) for nothing,
# and then one whole batch where 11 clips do (8 of a 19-minute conversion on 120 clips).
TABLE_TOKENS = 16384


def _search(model, acms: dict, logits: dict, shift: float, target: float) -> float:
    """The shift (near `shift`) at which the gates spend `target`, from their `logits`: the largest that still
    spends it (for 1.0: the smallest shift that runs every learner), or the next one if closer."""
    lo, hi = shift - LIMIT, shift + LIMIT  # beta falls as the shift rises
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _spent(model, acms, logits, mid) >= target - 1e-9 else (lo, mid)
    return hi if abs(_spent(model, acms, logits, hi) - target) < abs(_spent(model, acms, logits, lo) - target) else lo


def _at(model, acms: dict, batches: list, device, shift: float, delta=None) -> dict:
    """Every gate's logits on its inputs with the knob at (shift, delta); the shift itself is left
    to _beta, which applies it as the knob would."""
    set_knob(acms.values(), shift, delta)
    return gate_logits(acms, _gate_inputs(model, batches, device))


@torch.no_grad()
def budget_table(model: nn.Module, batches: list, trained: float, device, grid=GRID, tokens=None) -> dict:
    """{"budgets", "shifts", "achieved"}: the grid's budgets hit within TOLERANCE (others, e.g.
    below what the ACMs' min_k allow, are left out) and the trained budget at shift 0. The model's
    gates are left as they were. Budget-conditioned gates (convert --budget-range) are told each
    grid budget first; the shift then only trims what they spend, and need not fall with the budget
    (the table says "conditioned"). Only the first samples that hold `tokens` (default
    TABLE_TOKENS) tokens at the largest ACM are used."""
    acms = dict(acm_modules(model))
    saved = knob_state(acms.values())
    conditioned = any(m.gate.budget_in is not None for m in acms.values())
    try:
        home = _at(model, acms, batches[:1], device, 0.0)
        per_sample = max((len(z) for z in home.values()), default=0) / max(batch_size(batches[0]) or 1, 1)
        capped = cap_tokens(batches, per_sample, tokens or TABLE_TOKENS)
        if capped[0] is not batches[0]:  # the first batch alone holds more than enough: its first rows
            home = _at(model, acms, capped, device, 0.0)
        elif len(capped) > 1:  # the rest of them, added to the first batch's logits
            rest = _at(model, acms, capped[1:], device, 0.0)
            home = {n: torch.cat([z, rest[n]]) for n, z in home.items()}
        batches = capped
        rows = {round(trained, 6): (0.0, _spent(model, acms, home, 0.0))}
        below = sorted((b for b in grid if b < trained - TOLERANCE), reverse=True)
        above = sorted(b for b in grid if b > trained + TOLERANCE)
        # a forward pass or more over the calibration batches per budget: minutes on a large model
        bar = tqdm(total=len(below) + len(above), desc="budget table", unit="budget", leave=False)
        for side in (below, above):
            shift, logits = 0.0, home
            for b in side:
                bar.update()
                delta = b - trained if conditioned else None
                if conditioned:  # the gates' answer to the budget changes their inputs downstream
                    logits = _at(model, acms, batches, device, shift, delta)
                for _ in range(2):  # a second search on the inputs at the new shift, where needed
                    shift = _search(model, acms, logits, shift, b)
                    logits = _at(model, acms, batches, device, shift, delta)
                    got = _spent(model, acms, logits, shift)
                    if abs(got - b) <= TOLERANCE:
                        rows[b] = (shift, got)
                        break
        bar.close()
    finally:
        restore_knob(acms.values(), saved)
    budgets = sorted(rows)
    shifts = [rows[b][0] for b in budgets]
    table = {"budgets": budgets, "shifts": shifts, "achieved": [rows[b][1] for b in budgets]}
    if conditioned:
        return {**table, "conditioned": True}
    for i in range(1, len(shifts)):  # searches on finite data: keep the shifts falling
        shifts[i] = min(shifts[i], shifts[i - 1])
    return table
