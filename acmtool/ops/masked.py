"""DynamicLearners with stock tensor ops only (no validation, no data-dependent shapes): what the
`standard` ONNX export traces. Every learner runs on every token; a mask keeps i < K."""
from __future__ import annotations

import torch

from acmtool.ops.activations import apply_activation


def dynamic_learners_masked(x, k, w1, b1, w2, b2, activation: str) -> torch.Tensor:
    n = w1.shape[0]
    xf = x.reshape(1, -1, x.shape[-1])  # [1, T, Din]
    hid = torch.matmul(xf, w1)  # [N, T, h]
    if b1 is not None:
        hid = hid + b1.unsqueeze(1)
    out = torch.matmul(apply_activation(hid, activation), w2)  # [N, T, Dout]
    keep = torch.arange(n, device=x.device).unsqueeze(1) < k.reshape(1, -1)  # [N, T]
    y = (out * keep.unsqueeze(-1).to(out.dtype)).sum(0)
    if b2 is not None:
        y = y + b2
    return y.reshape(*x.shape[:-1], w2.shape[2])
