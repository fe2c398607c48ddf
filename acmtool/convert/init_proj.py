"""Projection learners from the truncated SVD: every prefix is the best low-rank approximation."""
from __future__ import annotations

import torch

from acmtool.layers.acm import AcmProjection


def proj_learner_rank(in_features: int, out_features: int, n: int, rank: int | None) -> int:
    """Default: N learners whose full cost equals the dense projection's."""
    if rank is not None:
        return rank
    return max(1, (in_features * out_features) // ((in_features + out_features) * n))


@torch.no_grad()
def init_proj_learners(acm: AcmProjection, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """weight is the Linear's [Dout, Din]; learner i holds singular directions i*r .. (i+1)*r - 1,
    largest first, with sqrt(S) on both factors. Ranks beyond min(Din, Dout) are zero."""
    n, r = acm.num_learners, acm.learner_width
    w = weight.detach().double().t()  # [Din, Dout]; float64 so that no model dtype loses bits here
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    total = n * r
    keep = min(total, s.numel())
    root = s[:keep].sqrt()
    w1 = w.new_zeros(w.shape[0], total)
    w2 = w.new_zeros(total, w.shape[1])
    w1[:, :keep] = u[:, :keep] * root
    w2[:keep] = root[:, None] * vh[:keep]
    acm.w1.copy_(w1.reshape(-1, n, r).permute(1, 0, 2))
    acm.w2.copy_(w2.reshape(n, r, -1))
    if acm.b2 is not None:
        acm.b2.copy_(bias.detach() if bias is not None else torch.zeros_like(acm.b2))
