"""acmize_: replace a model's dense blocks with ACMs, in place."""
from __future__ import annotations

from typing import Iterable, Optional

import torch.nn as nn

from acmtool.adapters import find_sites
from acmtool.adapters.sites import MlpSite, ProjSite
from acmtool.config import AcmConfig
from acmtool.convert.calibration import mean_abs_activations
from acmtool.convert.init_mlp import init_mlp_learners, mlp_learner_width, neuron_importance
from acmtool.convert.init_proj import init_proj_learners, proj_learner_rank
from acmtool.cost import is_acm_model, profile_original
from acmtool.errors import AcmInputError
from acmtool.layers.acm import AcmMlp, AcmProjection, AcmSplitLinear, acm_modules

INFO_ATTR = "acmtool_info"


def _gate_hidden(cfg: AcmConfig, din: int, num_choices: int, full_flops: int) -> int:
    if cfg.gate_hidden is not None:
        return cfg.gate_hidden
    return max(8, round(cfg.gate_cost_fraction * full_flops / (2 * (din + num_choices))))


def _build_mlp(site: MlpSite, cfg: AcmConfig) -> AcmMlp:
    n = cfg.num_learners
    h = mlp_learner_width(site, n)
    full = 2 * n * h * (site.fc1.in_features + site.fc2.out_features)
    return AcmMlp(site.fc1.in_features, site.fc2.out_features, n, h, site.activation, min_k=0,
                  gate_hidden=_gate_hidden(cfg, site.fc1.in_features, n + 1, full),
                  bias1=True, bias2=site.fc2.bias is not None, gumbel_tau=cfg.gumbel_tau, impl=cfg.impl)


def _build_proj(din: int, dout: int, bias: bool, cfg: AcmConfig) -> AcmProjection:
    n = cfg.num_learners
    r = proj_learner_rank(din, dout, n, cfg.proj_rank)
    full = 2 * n * r * (din + dout)
    return AcmProjection(din, dout, n, r, "identity", min_k=1, gate_hidden=_gate_hidden(cfg, din, n, full),
                         bias1=False, bias2=bias, gumbel_tau=cfg.gumbel_tau, impl=cfg.impl)


def _convert_proj(site: ProjSite, cfg: AcmConfig, init: bool, **to) -> nn.Module:
    lin = site.linear
    if lin.out_features % site.parts:
        raise AcmInputError(f"{site.path}: {lin.out_features} outputs do not split into {site.parts} parts")
    dout = lin.out_features // site.parts
    parts = []
    for j in range(site.parts):
        acm = _build_proj(lin.in_features, dout, lin.bias is not None, cfg).to(**to)
        if init:
            rows = slice(j * dout, (j + 1) * dout)
            init_proj_learners(acm, lin.weight[rows], lin.bias[rows] if lin.bias is not None else None)
        parts.append(acm)
    return parts[0] if site.parts == 1 else AcmSplitLinear(parts)


def acmize_(model: nn.Module, config: Optional[AcmConfig] = None, calibration: Optional[Iterable] = None,
            example_inputs=None, init: bool = True) -> nn.Module:
    """Replace the model's MLPs (and attention projections with targets='mlp+attn') with ACMs.

    calibration: batches (tensors, tuples or dicts) whose activations order the MLP neurons by
    importance; without it the weights decide. example_inputs: one input for the whole-model FLOPs
    profile kept for reports. init=False only builds the structure (to load a checkpoint into).
    Returns the model, which keeps what was done in `model.acmtool_info`.
    """
    cfg = config or AcmConfig()
    if is_acm_model(model):
        raise AcmInputError("this model already holds ACMs; convert the original model instead")
    sites = find_sites(model, cfg.targets)
    if not sites:
        raise AcmInputError(f"found no block to convert in {type(model).__name__}: no known adapter matched "
                            f"(timm ViT, Hugging Face BERT/ViT/DeiT/Dinov2/wav2vec2/Whisper, Linear-act-Linear "
                            f"in nn.Sequential); register one with acmtool.register_adapter")
    profile = profile_original(model, sites, example_inputs) if example_inputs is not None else None
    activations = mean_abs_activations(model, sites, calibration) if (init and calibration is not None) else {}
    whole = [s for s in sites if s.path == ""]
    if whole:
        raise AcmInputError(f"the model itself is the block to convert ({type(model).__name__}); wrap it in a "
                            f"parent module (nn.Sequential(block)) so that the ACM can take its place")
    first = next(model.parameters())
    to = {"device": first.device, "dtype": first.dtype}  # build in place: no precision lost in a cast
    records = []
    for site in sites:
        if isinstance(site, MlpSite):
            new = _build_mlp(site, cfg).to(**to)
            if init:
                init_mlp_learners(new, site, neuron_importance(site, activations.get(site.path)))
        else:
            new = _convert_proj(site, cfg, init, **to)
        mode = model.get_submodule(site.path).training
        model.set_submodule(site.path, new.train(mode))
        for path in getattr(site, "identity", []):
            model.set_submodule(path, nn.Identity().train(mode))
        records.append({"path": site.path, "kind": "mlp" if isinstance(site, MlpSite) else "proj",
                        "adapter": site.adapter})
    if cfg.budget_input:
        for _, m in acm_modules(model):
            m.gate.condition_on_budget()
    setattr(model, INFO_ATTR, {"config": cfg.to_dict(), "sites": records, "flops_profile": profile})
    return model


def acm_info(model: nn.Module) -> dict:
    info = getattr(model, INFO_ATTR, None)
    if info is None:
        raise AcmInputError("this model was not converted by acmtool.acmize_")
    return info
