"""The cost model: FLOPs of each ACM at each k, of its gate, of the whole model, and the budget.

A multiply-add counts 2 FLOPs. Whole-model FLOPs come from torch's FlopCounterMode on one example
input (matmuls, convolutions, attention), plus norms and softmax, which it does not count.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from acmtool.io.call import run_model
from acmtool.layers.acm import AcmModule, acm_modules

aten = torch.ops.aten


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _per_element(flops: int):
    def formula(*args, out_shape=None, **kwargs) -> int:
        shape = out_shape[0] if isinstance(out_shape, (tuple, list)) and isinstance(out_shape[0], (tuple, list, torch.Size)) else out_shape
        return flops * math.prod(shape)
    return formula


_EXTRA_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,  # the CPU path torch.utils misses
    aten.native_layer_norm: _per_element(5),  # mean, variance, normalise, scale, shift
    aten._softmax: _per_element(5),  # max, subtract, exp, sum, divide
}


@torch.no_grad()
def count_flops(model: nn.Module, example_inputs) -> int:
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
            run_model(model, example_inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


@torch.no_grad()
def profile_original(model: nn.Module, sites: list, example_inputs) -> dict:
    """Total FLOPs of the original model and the tokens that reach each site, on one input."""
    tokens = {}
    handles = []
    for site in sites:
        lin = getattr(site, "fc1", None) or site.linear

        def hook(_mod, inp, _out, path=site.path, width=lin.in_features):
            tokens[path] = tokens.get(path, 0) + inp[0].numel() // width
        handles.append(lin.register_forward_hook(hook))
    try:
        total = count_flops(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    dense = sum(tokens.get(s.path, 0) * s.dense_flops() for s in sites)
    return {"original": total, "rest": total - dense, "site_tokens": tokens}


def acm_site_path(name: str) -> str:
    """The site an ACM belongs to: a split projection's parts share their Linear's tokens."""
    head, sep, tail = name.rpartition(".parts.")
    return head if sep and tail.isdigit() else name


def acm_rows(model: nn.Module) -> list[dict]:
    """One row per ACM: shapes and FLOPs per token at each k, and of its gate."""
    rows = []
    for name, m in acm_modules(model):
        rows.append({
            "module": name, "kind": m.kind, "num_learners": m.num_learners, "learner_width": m.learner_width,
            "in_features": m.in_features, "out_features": m.out_features, "min_k": m.min_k,
            "activation": m.activation,
            "flops_at_k": [int(m.flops_at(k)) for k in range(m.num_learners + 1)],
            "gate_flops": m.gate_flops(),
        })
    return rows


def budget(model: nn.Module, mean_k: dict[str, float], tokens: Optional[dict[str, int]] = None) -> float:
    """beta: the mean of k/N over tokens and ACMs, each ACM weighted by its full learner FLOPs.
    `tokens` (per site, as in a profile) weights ACMs that see different numbers of tokens (encoder vs decoder)."""
    num = den = 0.0
    for name, m in acm_modules(model):
        if name not in mean_k:
            continue
        w = m.flops_at(m.num_learners) * (tokens.get(acm_site_path(name), 1) if tokens else 1)
        num += w * mean_k[name] / m.num_learners
        den += w
    return num / den if den else float("nan")


def uniform_mean_k(model: nn.Module, beta: float) -> dict[str, float]:
    """k per ACM when every token spends beta of its learners (at least min_k)."""
    return {n: max(float(m.min_k), beta * m.num_learners) for n, m in acm_modules(model)}


def model_flops(model: nn.Module, profile: dict, mean_k: dict[str, float]) -> dict:
    """Whole-model FLOPs (gates included) for the mean k of each ACM, against the original."""
    tokens = profile["site_tokens"]
    total = profile["rest"]
    for name, m in acm_modules(model):
        t = tokens.get(acm_site_path(name), 0)
        total += t * (m.flops_at(mean_k.get(name, m.num_learners)) + m.gate_flops())
    return {"original": profile["original"], "acm": int(total), "ratio": total / profile["original"]}


def is_acm_model(model: nn.Module) -> bool:
    return any(isinstance(m, AcmModule) for m in model.modules())
