"""Sites: the places in a model where an ACM goes, as adapters find them."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn


@dataclass
class MlpSite:
    """Linear -> act -> Linear; the ACM is installed at `path` and `identity` paths become
    nn.Identity (for models whose MLP spans two modules, like BERT's intermediate/output)."""

    path: str
    fc1: nn.Linear
    fc2: nn.Linear
    activation: str
    adapter: str
    identity: list = field(default_factory=list)

    @property
    def in_features(self) -> int:
        return self.fc1.in_features

    def dense_flops(self) -> int:
        """FLOPs per token of the original block (a multiply-add counts 2)."""
        return 2 * self.fc1.out_features * (self.fc1.in_features + self.fc2.out_features)


@dataclass
class ProjSite:
    """One Linear replaced by low-rank ACMs; `parts` > 1 splits a fused projection (qkv)."""

    path: str
    linear: nn.Linear
    adapter: str
    parts: int = 1

    @property
    def in_features(self) -> int:
        return self.linear.in_features

    def dense_flops(self) -> int:
        return 2 * self.linear.in_features * self.linear.out_features
