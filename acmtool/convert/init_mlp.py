"""MLP learners from the original weights: hidden neurons ordered by importance, split into N groups."""
from __future__ import annotations

import math
from typing import Optional

import torch

from acmtool.adapters.sites import MlpSite
from acmtool.layers.acm import AcmMlp


def mlp_learner_width(site: MlpSite, n: int) -> int:
    return math.ceil(site.fc1.out_features / n)


@torch.no_grad()
def neuron_importance(site: MlpSite, mean_abs_activation: Optional[torch.Tensor]) -> torch.Tensor:
    """Importance of each hidden neuron: how much it moves the block's output.

    With calibration data: E|a_j| * ||W2[j, :]||; without: ||W1[:, j]|| * ||W2[j, :]||.
    """
    out_norm = site.fc2.weight.float().norm(dim=0)  # fc2.weight is [Dout, H]
    if mean_abs_activation is not None:
        return mean_abs_activation.to(out_norm.device).float() * out_norm
    return site.fc1.weight.float().norm(dim=1) * out_norm  # fc1.weight is [H, Din]


@torch.no_grad()
def init_mlp_learners(acm: AcmMlp, site: MlpSite, importance: torch.Tensor) -> None:
    """Pack the neurons, most important first, into acm's [N, Din, h] / [N, h, Dout] weights.
    When H is not a multiple of N the last learner is padded with zero neurons (no effect)."""
    n, h = acm.num_learners, acm.learner_width
    hidden = site.fc1.out_features
    order = torch.argsort(importance, descending=True, stable=True)
    w1 = site.fc1.weight.detach()[order].t()  # [Din, H]
    w2 = site.fc2.weight.detach()[:, order].t()  # [H, Dout]
    pad = n * h - hidden
    w1 = torch.cat([w1, w1.new_zeros(w1.shape[0], pad)], 1)
    w2 = torch.cat([w2, w2.new_zeros(pad, w2.shape[1])], 0)
    acm.w1.copy_(w1.reshape(-1, n, h).permute(1, 0, 2))
    acm.w2.copy_(w2.reshape(n, h, -1))
    if acm.b1 is not None:
        b1 = site.fc1.bias.detach()[order] if site.fc1.bias is not None else w1.new_zeros(hidden)
        acm.b1.copy_(torch.cat([b1, b1.new_zeros(pad)]).reshape(n, h))
    if acm.b2 is not None:
        acm.b2.copy_(site.fc2.bias.detach())
