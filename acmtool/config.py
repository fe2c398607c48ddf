"""AcmConfig: what `acmize_` builds. One dataclass, stored as JSON in every ACM checkpoint."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from acmtool.errors import AcmInputError

# The budget knob: beyond this distance below the trained budget the gates decide on a ranking they
# were not trained to make at that compute, and a model converted at the new budget will do better
# (set_budget warns; BudgetController stops there unless told otherwise).
FAR_FROM_TRAINED = 0.25

TARGETS = ("mlp", "mlp+attn")
IMPLS = ("grouped", "naive", "masked")
MAX_LEARNERS = 1024
MAX_WIDTH = 1 << 16


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise AcmInputError(f"{name} must be an integer in [{lo}, {hi}]; got {value!r}")


def _check_float(name: str, value, lo: float, hi: float, shown: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value < hi:
        raise AcmInputError(f"{name} must be a number in {shown}; got {value!r}")


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
    budget_input: bool = False
    """Gates that read the budget asked for (convert --budget-range; acmtool.layers.gate)."""

    def __post_init__(self):
        # Bounds as well as types: a checkpoint's config is untrusted, and N or G size allocations.
        _check_int("num_learners", self.num_learners, 1, MAX_LEARNERS)
        if self.targets not in TARGETS:
            raise AcmInputError(f"targets must be one of {', '.join(TARGETS)}; got {self.targets!r}")
        if self.gate_hidden is not None:
            _check_int("gate_hidden", self.gate_hidden, 1, MAX_WIDTH)
        _check_float("gate_cost_fraction", self.gate_cost_fraction, 0, 1, "(0, 1)")
        if self.proj_rank is not None:
            _check_int("proj_rank", self.proj_rank, 1, MAX_WIDTH)
        _check_float("gumbel_tau", self.gumbel_tau, 0, 100, "(0, 100)")
        if self.impl not in IMPLS:
            raise AcmInputError(f"impl must be one of {', '.join(IMPLS)}; got {self.impl!r}")
        if not isinstance(self.budget_input, bool):
            raise AcmInputError(f"budget_input must be true or false; got {self.budget_input!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AcmConfig":
        if not isinstance(d, dict):
            raise AcmInputError(f"an AcmConfig must be a JSON object; got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise AcmInputError(f"unknown AcmConfig fields {sorted(unknown)}: written by a newer acmtool?")
        return cls(**d)
