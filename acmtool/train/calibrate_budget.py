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


@torch.no_grad()
def calibrate_budget(model: nn.Module, batches: list, target: float, device, rounds: int = 2) -> dict:
    """Shift the gates so that the achieved budget on `batches` is as close to `target` as the
    discrete choices allow. Returns {"lambda": total shift, "budget": achieved}."""
    acms = dict(acm_modules(model))
    total_shift, achieved = 0.0, float("nan")
    for _ in range(rounds):  # shifting early gates changes later inputs: re-measure once
        logits = gate_logits(acms, _gate_inputs(model, batches, device))
        tokens = {acm_site_path(n): len(z) for n, z in logits.items()}

        def beta(lam: float) -> float:
            mean_k = {n: float(choices_at(acms[n], z, lam).float().mean()) for n, z in logits.items()}
            return budget(model, mean_k, tokens)
        lo, hi = -50.0, 50.0  # beta falls as lambda rises
        for _ in range(40):
            mid = (lo + hi) / 2
            if beta(mid) > target:
                lo = mid
            else:
                hi = mid
        lam = hi if abs(beta(hi) - target) <= abs(beta(lo) - target) else lo
        shift_gates(acms, lam)
        total_shift += lam
        achieved = beta(0.0)
    return {"lambda": total_shift, "budget": achieved}
