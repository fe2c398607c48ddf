"""ACMs that cannot beat the dense block they replace export as that dense block.

An ACM whose tokens spend (almost) all their learners costs its gate, the sorting and scattering
of tokens and N small GEMMs, to save little or nothing: DINOv2's first MLP at budget 0.5 chose
k = N for every token (the loss-aware labels put the budget where it matters), so its ACM could
only be slower than the original MLP. Such an ACM exports as the dense MLP of all N learners (the
path a static checkpoint takes: acmtool.export.static), which computes what the ACM computes at
k = N: tokens that chose fewer learners get all of them, so the output moves towards the original
model's and the compute spent rises a little; `acmtool inspect` and the conversion report list
the blocks, and `acmtool verify` checks them at k = N.

The rule is per ACM: its expected cost, mean k / N on the conversion's held-out data plus its
gate's FLOPs as a share of its learners', against DENSE_ABOVE (--dense-above).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch.nn as nn

from acmtool.errors import AcmInputError
from acmtool.layers.acm import acm_modules

# An ACM expected to cost at least this share of the dense block exports densely: the kernel's own
# time at a mean k / N of 0.9 saves at most a tenth, about what the gate and the token sort cost
# at a small batch. (Measure with python -m benchmarks run: the op against its own K = N.)
DENSE_ABOVE = 0.9


def expected_cost(model: nn.Module, mean_k: dict) -> dict:
    """{ACM name: mean k / N + gate FLOPs / full learner FLOPs} for the ACMs with a measured mean k."""
    out = {}
    for name, m in acm_modules(model):
        if name in mean_k and m.forced_k is None:
            full = m.flops_at(m.num_learners)
            out[name] = mean_k[name] / m.num_learners + (m.gate_flops() / full if full else 0.0)
    return out


def dense_choice(model: nn.Module, mean_k: dict, above: Optional[float] = DENSE_ABOVE) -> dict:
    """{ACM name: expected cost} for the ACMs to export densely; none when above is None."""
    if above is None:
        return {}
    if not above > 0:
        raise AcmInputError(f"--dense-above must be positive (a share of the dense block's cost); got {above}")
    return {n: c for n, c in expected_cost(model, mean_k).items() if c >= above}


def mean_k_of_checkpoint(info: dict) -> dict:
    """Each ACM's mean k on the conversion's held-out data, from the checkpoint's report ({} if none)."""
    layers = ((info.get("report") or {}).get("validation") or {}).get("per_layer") or {}
    return {n: float(v["mean_k"]) for n, v in layers.items() if isinstance(v, dict) and "mean_k" in v}


@contextlib.contextmanager
def densified(model: nn.Module, names):
    """The named ACMs run every learner (forced k = N) while the block runs: export then writes
    them as dense MLPs, and the PyTorch reference computes what that export computes."""
    acms = dict(acm_modules(model))
    unknown = [n for n in names if n not in acms]
    if unknown:
        raise AcmInputError(f"no ACM named {', '.join(unknown)} in this model")
    saved = {n: acms[n].forced_k for n in names}
    try:
        for n in names:
            acms[n].forced_k = acms[n].num_learners
        yield model
    finally:
        for n, k in saved.items():
            acms[n].forced_k = k


def exported_dense_blocks(onnx_model) -> dict:
    """{ACM name: expected cost} of the blocks an ONNX file (a path, or its loaded proto) holds as
    dense fallbacks (its metadata); a folder (an exported Whisper): those of every graph in it."""
    import json
    from pathlib import Path

    import onnx
    if not isinstance(onnx_model, onnx.ModelProto) and Path(onnx_model).is_dir():
        return {n: c for g in sorted(Path(onnx_model).glob("*.onnx")) for n, c in exported_dense_blocks(g).items()}
    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else \
        onnx.load(str(onnx_model), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        acms = json.loads(meta.get("acmtool.acms", "[]"))
    except json.JSONDecodeError:
        return {}
    return {a["module"]: a["dense_fallback"]["expected_cost"] for a in acms
            if isinstance(a, dict) and isinstance(a.get("dense_fallback"), dict)}


def dense_fallback_line(onnx_path) -> str:
    """One line naming the dense fallbacks of an exported model ('' when there are none)."""
    dense = exported_dense_blocks(onnx_path)
    if not dense:
        return ""
    shown = ", ".join(f"{n} ({c:.2f})" for n, c in list(dense.items())[:6]) + (" ..." if len(dense) > 6 else "")
    return (f"{len(dense)} ACMs exported as dense blocks (expected cost >= --dense-above of the dense block, so "
            f"the ACM could not beat it): {shown}")
