"""How much each token's block output matters to the model's output: a random probe of the
output's Fisher information, for the loss-aware gate labels.

For a small change dy of a block's output, the distillation loss (KL on logits, or the cosine of
the embedding) grows by about 1/2 dy^T F dy, where F = J^T A J, J is the output's Jacobian and A is
the loss's curvature at the teacher: diag(p) - p p^T for softmax logits, the identity for a
normalised embedding. One backward pass of <output, v>, with v random and E[v v^T] = A, gives
g = J^T v with E[g g^T] = F (Hutchinson's estimator), so sum_d g_d^2 dy_d^2 (F's diagonal)
estimates what an error dy costs. A token the output never reads (a ViT's patch tokens after the
last block feed no head) gets g = 0: its error costs nothing.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from acmtool.io.call import main_output

# Probes per batch for the loss-aware gate labels. One sample of g^2 has a relative standard
# deviation of about sqrt(2) per token, so the labels it gives are noisy: on a small Fashion-MNIST
# ViT (embed 64) the gates learned them to 25 % accuracy (5 choices) with one probe, 29 % with 8
# (same steps), for about 20 s more of gate training there.
PROBES = 8


def fisher_probe(output, mask: Optional[torch.Tensor], generator: Optional[torch.Generator] = None,
                 scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The scalar <output, v> whose gradient is one Hutchinson sample of J^T A^(1/2) r. With scale
    (an embedding's per-dimension spread), A = diag(1 / scale^2): the error a linear head on the
    standardised embedding sees, which fine-tuning then minimises (acmtool.train.feature_scale)."""
    kind, main = main_output(output, mask)
    r = torch.randn(main.shape, generator=generator, dtype=main.dtype, device="cpu").to(main.device)
    if kind == "logits":
        p = F.softmax(main.detach().float(), -1).to(main.dtype)
        sq = p.sqrt()
        # v = (diag(sqrt p) - p sqrt(p)^T) r has covariance diag(p) - p p^T (the p sum to 1)
        v = sq * r - p * (sq * r).sum(-1, keepdim=True)
        return (main * v).sum()
    if scale is not None:
        return (main / scale * r).sum()
    return (F.normalize(main, dim=-1) * r).sum()
