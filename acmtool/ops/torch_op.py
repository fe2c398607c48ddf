"""`torch.ops.acmtool.dynamic_learners`: the grouped path as one opaque torch op, so that
torch.export sees one node per ACM (which the ONNX exporter turns into DynamicLearners)."""
from __future__ import annotations

from typing import Optional

import torch

from acmtool.ops.dynamic_learners import dynamic_learners_grouped


@torch.library.custom_op("acmtool::dynamic_learners", mutates_args=())
def dynamic_learners_op(x: torch.Tensor, k: torch.Tensor, w1: torch.Tensor, b1: Optional[torch.Tensor],
                        w2: torch.Tensor, b2: Optional[torch.Tensor], activation: str) -> torch.Tensor:
    return dynamic_learners_grouped(x, k, w1, b1, w2, b2, activation)


@dynamic_learners_op.register_fake
def _(x, k, w1, b1, w2, b2, activation):
    return x.new_empty(*x.shape[:-1], w2.shape[2])
