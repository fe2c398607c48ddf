"""The Adaptive Computation Module: N learners, a gate, and the forward modes of DESIGN.md.

    h(x, k) = b2 + sum_{i=1..k} s_i(x),   s_i(x) = act(x W1_i + b1_i) W2_i
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from acmtool.layers.gate import AcmGate
from acmtool.ops import dynamic_learners, learner_outputs_of
from acmtool.ops.activations import ACTIVATIONS, apply_activation


def hard_gumbel_softmax(logits: torch.Tensor, tau: float, noise: float = 1.0) -> torch.Tensor:
    """One-hot samples with the straight-through gradient of softmax((logits + noise * g) / tau).
    noise = 1 is F.gumbel_softmax(hard=True); noise = 0 is the argmax that inference runs."""
    g = -torch.empty_like(logits).exponential_().log() if noise > 0 else torch.zeros_like(logits)
    soft = F.softmax((logits + noise * g) / tau, dim=-1)
    hard = F.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft


class AcmModule(nn.Module):
    """Packed learners (w1 [N, Din, h], b1 [N, h], w2 [N, h, Dout], b2 [Dout]) and a gate.

    forward() is gated: in training, hard Gumbel-softmax with the straight-through estimator and
    sum_k onehot_k * h(x, k); in eval, exactly k = argmax + min_k learners per token. Under
    `acmtool.fixed_k` every token runs the forced k instead. The k of the last forward is kept
    in `last_k` (and, while training, the gate logits and one-hot choices) for budgets and losses.
    """

    kind = "acm"

    def __init__(self, in_features: int, out_features: int, num_learners: int, learner_width: int,
                 activation: str, min_k: int, gate_hidden: int, bias1: bool = True, bias2: bool = True,
                 gumbel_tau: float = 0.8, impl: str = "grouped"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if not 0 <= min_k <= num_learners:
            raise ValueError(f"min_k must lie in [0, {num_learners}]; got {min_k}")
        self.in_features, self.out_features = in_features, out_features
        self.num_learners, self.learner_width = num_learners, learner_width
        self.activation, self.min_k = activation, min_k
        self.w1 = nn.Parameter(torch.zeros(num_learners, in_features, learner_width))
        self.b1 = nn.Parameter(torch.zeros(num_learners, learner_width)) if bias1 else None
        self.w2 = nn.Parameter(torch.zeros(num_learners, learner_width, out_features))
        self.b2 = nn.Parameter(torch.zeros(out_features)) if bias2 else None
        self.gate = AcmGate(in_features, gate_hidden, num_learners + 1 - min_k)
        self.gumbel_tau = gumbel_tau
        self.gumbel_noise = 1.0  # scale of the Gumbel noise in training; fine-tuning anneals it to 0
        self.impl = impl
        self.forced_k: Optional[int] = None
        self.replay_k: Optional[torch.Tensor] = None  # verify: run exactly the k another runtime chose
        self.last_k: Optional[torch.Tensor] = None
        self.last_logits: Optional[torch.Tensor] = None
        self.last_onehot: Optional[torch.Tensor] = None  # training: straight-through one-hot choices
        # the run-time budget knob (acmtool.set_budget): extra -shift * k / N on the gate's logits;
        # None at the trained budget. A float, or a tensor while the export traces it. Training
        # applies it too: --budget-range fine-tunes the model at budgets sampled across its range.
        self.budget_shift = None

    def extra_repr(self) -> str:
        return (f"{self.in_features} -> {self.out_features}, N={self.num_learners}, h={self.learner_width}, "
                f"activation={self.activation}, min_k={self.min_k}")

    # --- forward modes -------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.forced_k is not None:
            self.last_k = torch.full(x.shape[:-1], self.forced_k, device=x.device)
            self.last_logits = self.last_onehot = None
            return self.forward_k(x, self.forced_k)
        if self.training:
            # the gate reads a detached copy of the token: the task loss trains the gate's choices,
            # never the model upstream into steering the gate (it learned to raise every k that way)
            return self._forward_gated_train(x, self._shifted(self.gate(x.detach())))
        logits = self._shifted(self.gate(x))
        k = logits.argmax(-1) + self.min_k if self.replay_k is None else self.replay_k
        if not torch.compiler.is_compiling():  # export traces this: keep no traced tensors around
            self.last_k, self.last_logits, self.last_onehot = k, None, None
        return dynamic_learners(x, k, self.w1, self.b1, self.w2, self.b2, self.activation, self.impl)

    def _shifted(self, logits: torch.Tensor) -> torch.Tensor:
        if self.budget_shift is None:
            return logits
        ks = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype) + self.min_k
        return logits - self.budget_shift * ks / self.num_learners

    def forward_k(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """h(x, k) with one k for every token: the first k learners as one narrower MLP."""
        if not 0 <= k <= self.num_learners:
            raise ValueError(f"k must lie in [0, {self.num_learners}]; got {k}")
        if k == 0:
            y = x.new_zeros(*x.shape[:-1], self.out_features)
            return y + self.b2 if self.b2 is not None else y
        w1 = self.w1[:k].permute(1, 0, 2).reshape(self.in_features, k * self.learner_width)
        b1 = self.b1[:k].reshape(-1) if self.b1 is not None else None
        w2 = self.w2[:k].reshape(k * self.learner_width, self.out_features)
        hid = apply_activation(F.linear(x, w1.t(), b1), self.activation)
        return F.linear(hid, w2.t(), self.b2)

    def learner_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """s_i(x) for every learner: [N, ..., Dout] (no b2)."""
        return learner_outputs_of(x, self.w1, self.b1, self.w2, self.activation)

    def forward_prefixes(self, x: torch.Tensor) -> torch.Tensor:
        """h(x, k) for every k = 0..N at once: [N + 1, ..., Dout] (for distillation)."""
        s = self.learner_outputs(x)
        zero = torch.zeros_like(s[:1])
        y = torch.cat([zero, s.cumsum(0)], 0)
        return y + self.b2 if self.b2 is not None else y

    def _forward_gated_train(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        onehot = hard_gumbel_softmax(logits, self.gumbel_tau, self.gumbel_noise)  # [..., C], C = N + 1 - min_k
        # Learner i runs when k > i, i.e. for choices c >= i + 1 - min_k; the weight of s_i is the
        # sum of those one-hot entries, so sum_k onehot_k * h(x, k) = b2 + sum_i weight_i * s_i(x)
        # and the task loss reaches the gate through every weight.
        tail = onehot.flip(-1).cumsum(-1).flip(-1)  # tail[c] = sum_{c' >= c} onehot[c']
        idx = (torch.arange(self.num_learners, device=x.device) + 1 - self.min_k).clamp(min=0)
        weights = tail.index_select(-1, idx)  # [..., N]
        s = self.learner_outputs(x)  # [N, ..., Dout]
        y = torch.einsum("n...o,...n->...o", s, weights)
        self.last_k = onehot.detach().argmax(-1) + self.min_k
        self.last_logits, self.last_onehot = logits, onehot
        return y + self.b2 if self.b2 is not None else y

    # --- costs (FLOPs per token; a multiply-add counts 2) -------------------------------
    def learner_flops(self) -> int:
        return 2 * self.learner_width * (self.in_features + self.out_features)

    def flops_at(self, k: float) -> float:
        return k * self.learner_flops()

    def gate_flops(self) -> int:
        return self.gate.flops_per_token()


class AcmMlp(AcmModule):
    """Replaces Linear -> act -> Linear; h(x, N) equals the original MLP; min_k = 0."""

    kind = "mlp"


class AcmProjection(AcmModule):
    """Replaces one Linear with low-rank learners (identity activation); min_k = 1."""

    kind = "proj"


class AcmSplitLinear(nn.Module):
    """A fused projection (timm's qkv) as one ACM per part, outputs concatenated."""

    def __init__(self, parts: list[AcmProjection]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], dim=-1)


def acm_modules(model: nn.Module):
    """(name, module) for every ACM in the model, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AcmModule)]
