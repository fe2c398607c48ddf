"""AcmConfig: what `acmize_` builds. One dataclass, stored as JSON in every ACM checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from acmtool.errors import AcmInputError

TARGETS = ("mlp", "mlp+attn")
IMPLS = ("grouped", "naive", "masked")


@dataclass
class AcmConfig:
    num_learners: int = 4
    """N, the learners per ACM."""
    targets: str = "mlp"
    """'mlp', or 'mlp+attn' to convert the attention projections (q, k, v, o) too."""
    gate_hidden: Optional[int] = None
    """G, the gate's hidden width; None sizes it to `gate_cost_fraction` of the module's FLOPs."""
    gate_cost_fraction: float = 0.01
    proj_rank: Optional[int] = None
    """Rank of each projection learner; None gives N learners whose full cost equals the dense
    projection's (total rank Din*Dout/(Din+Dout)), so that a budget below 1 saves compute."""
    gumbel_tau: float = 0.8
    impl: str = "grouped"
    """Gated inference in PyTorch: 'grouped' (fast path) or 'naive' (the reference)."""

    def __post_init__(self):
        if not isinstance(self.num_learners, int) or self.num_learners < 1:
            raise AcmInputError(f"num_learners must be a positive integer; got {self.num_learners!r}")
        if self.targets not in TARGETS:
            raise AcmInputError(f"targets must be one of {', '.join(TARGETS)}; got {self.targets!r}")
        if self.gate_hidden is not None and self.gate_hidden < 1:
            raise AcmInputError(f"gate_hidden must be positive; got {self.gate_hidden}")
        if not 0 < self.gate_cost_fraction < 1:
            raise AcmInputError(f"gate_cost_fraction must lie in (0, 1); got {self.gate_cost_fraction}")
        if self.proj_rank is not None and self.proj_rank < 1:
            raise AcmInputError(f"proj_rank must be positive; got {self.proj_rank}")
        if self.gumbel_tau <= 0:
            raise AcmInputError(f"gumbel_tau must be positive; got {self.gumbel_tau}")
        if self.impl not in IMPLS:
            raise AcmInputError(f"impl must be one of {', '.join(IMPLS)}; got {self.impl!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AcmConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise AcmInputError(f"unknown AcmConfig fields {sorted(unknown)}: written by a newer acmtool?")
        return cls(**d)
