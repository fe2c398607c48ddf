"""The per-ACM table and whole-model totals that `inspect` and `convert` print."""
from __future__ import annotations

import torch.nn as nn

from acmtool.cli.format import flops, table
from acmtool.cost import acm_rows, budget, model_flops, uniform_mean_k

BUDGETS = (0.25, 0.5, 0.75, 1.0)


def summary(model: nn.Module, info: dict) -> dict:
    """JSON-ready: rows per ACM, and whole-model FLOPs at uniform budgets when profiled."""
    out = {"acms": acm_rows(model), "whole_model": None}
    profile = info.get("flops_profile")
    if profile:
        out["whole_model"] = {
            "example_tokens": profile["site_tokens"],
            "original_flops": profile["original"],
            "at_budget": {str(b): model_flops(model, profile, uniform_mean_k(model, b)) for b in BUDGETS},
        }
        for b in BUDGETS:
            out["whole_model"]["at_budget"][str(b)]["beta"] = budget(model, uniform_mean_k(model, b),
                                                                      profile["site_tokens"])
    return out


def render(s: dict) -> str:
    n_max = max(r["num_learners"] for r in s["acms"])
    headers = ["module", "kind", "N", "width", "in->out"] + [f"k={k}" for k in range(n_max + 1)] + ["gate"]
    rows = []
    for r in s["acms"]:
        ks = [flops(f) for f in r["flops_at_k"]] + [""] * (n_max - r["num_learners"])
        ks = [v if k >= r["min_k"] else "-" for k, v in enumerate(ks)]
        rows.append([r["module"], r["kind"], r["num_learners"], r["learner_width"],
                     f"{r['in_features']}->{r['out_features']}"] + ks + [flops(r["gate_flops"])])
    lines = ["FLOPs per token of each ACM at each k (a multiply-add counts 2):", table(headers, rows)]
    full = sum(r["flops_at_k"][-1] for r in s["acms"])
    gates = sum(r["gate_flops"] for r in s["acms"])
    lines.append(f"\n{len(s['acms'])} ACMs; all learners {flops(full)} FLOPs/token, gates {flops(gates)} "
                 f"({100 * gates / full:.2f} %)")
    wm = s["whole_model"]
    if wm:
        lines.append(f"Whole model on one example input: original {flops(wm['original_flops'])} FLOPs")
        for b, v in wm["at_budget"].items():
            lines.append(f"  every token at budget {float(b):.2f} (beta {v['beta']:.3f}): {flops(v['acm'])} FLOPs, "
                         f"{v['ratio']:.3f} x original (gates included)")
    else:
        lines.append("Whole-model FLOPs: not profiled (no example input known for this model)")
    return "\n".join(lines)
