"""ConvertOptions: everything `acmtool convert` with --data takes, checked before any work."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from acmtool.errors import AcmInputError


GATE_LABELS = ("auto", "loss", "budget", "tau")
# how distillation may weigh the prefixes h(z, k) (acmtool.train.losses.prefix_weights)
DISTILL_WEIGHTS = ("anchor", "even", "usage")
# Gate pre-training's learning rate per label rule (--gate-lr overrides). The loss-aware labels need
# the higher one: at 1e-3 the gates of a Fashion-MNIST ViT fit them to 25-29 % (5 choices) in a
# quarter epoch and hedge, spending k = 4 on a third of the last block's patch tokens (which no head
# reads); at 2e-2, 65 %, and that block's mean k fell from 1.6 to 0.15. 'budget' keeps the rate
# that met the MiniLM acceptance figures.
GATE_LR = {"loss": 2e-2, "budget": 1e-3, "tau": 1e-3}


def parse_budget_range(text: Optional[str]) -> Optional[list]:
    """"LO:HI" -> [lo, hi] with 0 < lo < hi <= 1."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        lo, hi = (float(p) for p in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None:
        raise AcmInputError(f"--budget-range {text!r}: give two budgets as LO:HI, e.g. 0.25:1.0")
    return check_budget_range([lo, hi])


def whole_learners(budget: float, num_learners: int) -> bool:
    k = budget * num_learners
    return abs(k - round(k)) < 1e-6 and round(k) >= 1


def static_learners(budget: float, num_learners: int = 4, most: int = 64) -> Optional[int]:
    """The fewest learners, from num_learners up, of which the budget is a whole number (>= 1): the
    static baseline's N at that budget (0.125: 8)."""
    return next((n for n in range(num_learners, most + 1) if whole_learners(budget, n)), None)


# An ACM whose tokens get fewer learners than this on average, budget x N, steps too coarsely: it
# must skip the block for most tokens to meet the budget. On DINOv2 at 0.125, 4 learners (0.5 a
# token) lost to the static model by 6.25 +- 1.12 drop-in probe points; 8 learners won by 4.06 +- 0.99.
FEW_LEARNERS = 1.0


def few_learners_line(budget: float, num_learners: int, lowest: Optional[float] = None) -> Optional[str]:
    """A hint for a conversion whose ACMs get fewer than FEW_LEARNERS learners per token on average
    (at `lowest`, the bottom of a --budget-range, where given); None when they do not."""
    low = budget if lowest is None else lowest
    per_token = low * num_learners
    if per_token >= FEW_LEARNERS:
        return None
    better = next((n for n in (8, 16, 32, 64, 128) if n > num_learners and low * n >= 1), None)
    advice = f"; --learners {better} gives finer steps" if better else ""
    return (f"note: budget {low:g} x {num_learners} learners = {per_token:g} learners per token on average: most "
            f"tokens must skip each block{advice} (on DINOv2 at 0.125, 8 learners beat the static model "
            f"where 4 lost to it)")


def check_budget_range(value, budget: Optional[float] = None) -> list:
    """[lo, hi] as floats; `budget` (the model's default) must lie in it."""
    if not isinstance(value, (list, tuple)) or len(value) != 2 or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise AcmInputError(f"--budget-range: two budgets, LO and HI; got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if not 0 < lo < hi <= 1:
        raise AcmInputError(f"--budget-range {lo:g}:{hi:g}: need 0 < LO < HI <= 1")
    if budget is not None and not lo <= budget <= hi:
        raise AcmInputError(f"--budget {budget:g} lies outside --budget-range {lo:g}:{hi:g}: the budget the model "
                            f"runs at by default must be one it trains for")
    return [lo, hi]


@dataclass
class ConvertOptions:
    model: str
    budget: float
    data: Optional[str]  # None: the built-in data for the model's inputs (acmtool.data.default)
    output: str
    weights: Optional[str] = None
    arch: Optional[str] = None
    model_args: Optional[dict] = None
    trust_pickle: bool = False
    num_learners: int = 4
    targets: str = "mlp"
    static: bool = False
    labels: bool = False
    finetune_gates: bool = False  # train the gates in fine-tuning too (budget, entropy, diversity losses)
    budget_range: Optional[list] = None  # [lo, hi]: fine-tune for every budget in it (acmtool.train.budget_range)
    range_skew: float = 1.0  # > 1: more of the range's fine-tuning steps near lo (budget_range.step_budget)
    # how distillation weighs each prefix h(z, k): "anchor" (h(z, N) as much as the rest together),
    # "even", "usage" (half by the share of tokens the budget sends to each k); "auto": anchor for
    # gated models, even for the static baseline (acmtool.train.losses.prefix_weights)
    distill_weights: str = "auto"
    distill_epochs: float = 1.0
    gate_epochs: float = 0.5
    finetune_epochs: float = 1.0
    max_steps: Optional[int] = None  # caps every phase (quick runs and tests)
    batch_size: int = 32
    distill_lr: float = 3e-4
    gate_lr: Optional[float] = None  # None: GATE_LR of the labels in use
    finetune_lr: float = 1e-4
    tau: float = 0.83
    # "loss": oracle allocation at the budget, errors weighed by what they cost the output;
    # "budget": the same per block, errors relative to each token's output; "tau": DESIGN.md's rule;
    # "auto": loss (errors weighed by what they cost the output, one allocation over every block)
    gate_labels: str = "auto"
    gate_probes: int = 8  # Fisher probes per batch for the 'loss' labels (acmtool.train.sensitivity.PROBES)
    gumbel_tau: float = 0.8
    budget_weight: float = 0.1
    entropy_weight: float = 0.05
    diversity_weight: float = 0.05
    val_fraction: float = 0.1
    max_samples: Optional[int] = None
    text_column: Optional[str] = None  # tables of text (.csv, .tsv, .jsonl): guessed when None
    label_column: Optional[str] = None
    seed: int = 0
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu
    checkpoint_minutes: float = 5.0
    resume: bool = False
    workers: int = 0
    onnx: bool = True  # export the ONNX model beside the checkpoint
    force: bool = False  # replace existing outputs (checkpoint, report, ONNX); --resume replaces its own

    def __post_init__(self):
        if not 0 < self.budget <= 1:
            raise AcmInputError(f"--budget must lie in (0, 1]: the fraction of learner compute to keep; "
                                f"got {self.budget}")
        for name in ("distill_epochs", "gate_epochs", "finetune_epochs"):
            if getattr(self, name) < 0:
                raise AcmInputError(f"--{name.replace('_', '-')} must be >= 0")
        if self.batch_size < 1:
            raise AcmInputError("--batch-size must be positive")
        if not 0 < self.tau < 1:
            raise AcmInputError(f"--tau must lie in (0, 1); got {self.tau}")
        if self.gate_labels not in GATE_LABELS:
            raise AcmInputError(f"--gate-labels must be one of {', '.join(GATE_LABELS)}; got {self.gate_labels!r}")
        for name in ("distill_lr", "gate_lr", "finetune_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise AcmInputError(f"--{name.replace('_', '-')} must be positive; got {value}")
        if self.distill_weights not in ("auto",) + DISTILL_WEIGHTS:
            raise AcmInputError(f"--distill-weights must be one of auto, {', '.join(DISTILL_WEIGHTS)}; "
                                f"got {self.distill_weights!r}")
        if self.gate_probes < 1:
            raise AcmInputError(f"--gate-probes must be at least 1; got {self.gate_probes}")
        if self.max_steps is not None and self.max_steps < 1:
            raise AcmInputError("--max-steps must be positive")
        if not 1 <= self.range_skew <= 8:
            raise AcmInputError(f"--range-skew must lie in [1, 8] (1: fine-tuning budgets spread evenly over the "
                                f"range; 2: more of them near its low end); got {self.range_skew}")
        if self.range_skew != 1 and self.budget_range is None:
            raise AcmInputError("--range-skew spreads the fine-tuning budgets of --budget-range LO:HI; give the range")
        if self.budget_range is not None:
            self._check_budget_range()
        if self.static and self.budget is not None:
            self._check_static_width()

    def _check_static_width(self) -> None:
        # the static baseline runs a whole number of learners per token; a budget between two would
        # silently give a model of another width (0.125 of 4 learners: none, the MLPs removed)
        k = self.budget * self.num_learners
        if whole_learners(self.budget, self.num_learners):
            return
        n = static_learners(self.budget, self.num_learners)
        hint = f"use --learners {n} (k = {round(self.budget * n)})" if n else \
            f"choose a budget that is a multiple of 1 / {self.num_learners}"
        raise AcmInputError(f"--static runs a whole number of learners per token, and budget {self.budget:g} x "
                            f"{self.num_learners} learners = {k:g}; {hint}")

    def _check_budget_range(self) -> None:
        self.budget_range = check_budget_range(self.budget_range, self.budget)
        if self.static:
            raise AcmInputError("--budget-range trains the gates' budget knob; a --static model has no gates")
        if self.finetune_gates:
            raise AcmInputError("--budget-range fine-tunes with the gates fixed (their shift sets each step's "
                                "budget); drop --finetune-gates")
        if self.gate_labels == "tau":
            raise AcmInputError("--budget-range trains the gates on each budget's allocation; the tau labels "
                                "have no budget: use --gate-labels loss (the default) or budget")

    def distill_weighting(self) -> str:
        """--distill-weights with auto resolved: the static baseline never runs k = N, so nothing to anchor."""
        if self.distill_weights != "auto":
            return self.distill_weights
        return "even" if self.static else "anchor"

    @staticmethod
    def defaults() -> dict:
        """Each option's default, as to_dict writes it (for RunState: options newer than a saved run)."""
        return {f.name: f.default for f in dataclasses.fields(ConvertOptions) if f.default is not dataclasses.MISSING}

    def to_dict(self) -> dict:
        """The run's options as --resume compares them; --force says how to write, not what to train."""
        d = dataclasses.asdict(self)
        del d["force"]
        return d
