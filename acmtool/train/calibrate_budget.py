"""Hit the budget exactly: shift every gate's logits by -lambda * k / N, with lambda found by
bisection on training batches. Trained gates land near the target; this removes the rest of
the gap. The shift folds into the gates' output bias, so exported models need nothing new."""
from __future__ import annotations

import torch
import torch.nn as nn

from acmtool.cost import acm_site_path, budget
from acmtool.layers.acm import acm_modules
from acmtool.train.tokens import real_inputs


def _gate_inputs(model: nn.Module, batches, device) -> dict:
    """Every ACM's input tokens (real tokens only where a mask lines up) over the batches."""
    return real_inputs(model, dict(acm_modules(model)), batches, device)


@torch.no_grad()
def shift_gates(model_or_acms, lam: float) -> None:
    """Add -lam * k / N to every gate's logit for k (lam > 0 pushes towards fewer learners)."""
    acms = model_or_acms.values() if isinstance(model_or_acms, dict) else [m for _, m in acm_modules(model_or_acms)]
    for m in acms:
        bias = m.gate.fc2.bias
        ks = torch.arange(m.gate.num_choices, device=bias.device, dtype=bias.dtype) + m.min_k
        bias -= lam * ks / m.num_learners


def gate_logits(acms: dict, zs: dict) -> dict:
    """Every gate's logits on its inputs, once: a bisection then only shifts and compares them."""
    return {n: acms[n].gate(z) for n, z in zs.items()}


def choices_at(m, logits: torch.Tensor, lam: float) -> torch.Tensor:
    """The k each token gets from its gate's `logits` shifted by lam (as shift_gates would)."""
    ks = torch.arange(logits.shape[-1], device=logits.device) + m.min_k
    return (logits - lam * ks / m.num_learners).argmax(-1) + m.min_k


def _choices(m, z, lam: float) -> torch.Tensor:
    return choices_at(m, m.gate(z), lam)


# Where the gates' proposals do not land: a search on the budget the model really spends. A gate's
# choice moves its block's output and so the later gates' inputs, and that response need not be
# monotone: Whisper tiny.en's encoder, its gates trained after the anchored distillation, spent
# 0.43 of its learners at shift 0, 0.33 at -3 and 0.24 at -6 (towards more learners): the first
# block's extra learners turned the second block's gates to fewer (its mean k 2.83 -> 0.80).
# Proposals from each round's logits then cycled, and convert, asked for 0.5, shipped 0.25.
TOLERANCE = 0.01  # the proposals are measured again and kept when this close
ROUNDS = 3  # proposals from fresh logits before the search
SEARCH_STEPS = 16  # bisection steps of the search: the bracket of width 100 to 0.0015
LIMIT = 50.0


def _fresh(model, acms: dict, batches, device) -> tuple[dict, float]:
    """Every gate's logits on its inputs as the model runs now, and the budget they spend."""
    logits = gate_logits(acms, _gate_inputs(model, batches, device))
    return logits, _spent(model, acms, logits, 0.0)


def _spent(model, acms: dict, logits: dict, lam: float) -> float:
    """The budget the gates spend at shift `lam`, given their `logits` (inputs held fixed)."""
    tokens = {acm_site_path(n): len(z) for n, z in logits.items()}
    mean_k = {n: float(choices_at(acms[n], z, lam).float().mean()) for n, z in logits.items()}
    return budget(model, mean_k, tokens)


def _proposal(model, acms: dict, logits: dict, target: float) -> float:
    """The shift at which the gates would spend `target` if their inputs did not move."""
    lo, hi = -LIMIT, LIMIT  # the spend falls as the shift rises
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _spent(model, acms, logits, mid) > target else (lo, mid)
    return hi if abs(_spent(model, acms, logits, hi) - target) <= abs(_spent(model, acms, logits, lo) - target) else lo


@torch.no_grad()
def calibrate_budget(model: nn.Module, batches: list, target: float, device, rounds: int = ROUNDS) -> dict:
    """Shift the gates so that the budget the model spends on `batches` is as close to `target` as
    the discrete choices allow. First the shifts the gates' logits propose, each measured again with
    the inputs it causes; where none lands within TOLERANCE, a bisection on the measured spend
    between the extreme shifts. Returns {"lambda": total shift, "budget": measured spend,
    "passes": forward passes over `batches`}."""
    acms = dict(acm_modules(model))
    applied, tried, passes = 0.0, [], 0

    def move_to(lam: float) -> None:
        nonlocal applied
        shift_gates(acms, lam - applied)
        applied = lam

    logits, got = _fresh(model, acms, batches, device)
    passes += 1
    tried.append((applied, got))
    for _ in range(rounds):  # shifting early gates changes later inputs: measure each proposal again
        if abs(got - target) <= TOLERANCE:
            break
        move_to(applied + _proposal(model, acms, logits, target))
        logits, got = _fresh(model, acms, batches, device)
        passes += 1
        tried.append((applied, got))
    if abs(got - target) > TOLERANCE:  # the spend answers the shift non-monotonically: search it
        lo, hi = -LIMIT, LIMIT  # lo spends more than the target, hi less (every gate at its extreme)
        for _ in range(SEARCH_STEPS):
            mid = (lo + hi) / 2
            move_to(mid)
            got = _fresh(model, acms, batches, device)[1]
            passes += 1
            tried.append((mid, got))
            lo, hi = (mid, hi) if got > target else (lo, mid)
            if abs(got - target) <= TOLERANCE:
                break
    lam, got = min(tried, key=lambda t: (abs(t[1] - target), abs(t[0])))
    move_to(lam)
    return {"lambda": lam, "budget": got, "passes": passes}
