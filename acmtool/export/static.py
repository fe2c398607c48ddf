"""Static ACMs (every token runs the same k learners) for export: what they compute is a narrower
dense block, Linear(Din, k*h) -> act -> Linear(k*h, Dout), holding only the first k learners'
weights. No gate and no custom op: the graph is plain ONNX in either export format."""
from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from acmtool.layers.acm import AcmModule, acm_modules
from acmtool.ops.activations import apply_activation


class SlicedMlp(nn.Module):
    """h(x, k) of `acm` for a fixed k, as one dense MLP of width k * h (k = 0: b2 alone)."""

    def __init__(self, acm: AcmModule, k: int):
        super().__init__()
        if not 0 <= k <= acm.num_learners:
            raise ValueError(f"k must lie in [0, {acm.num_learners}]; got {k}")
        d_in, h, d_out = acm.in_features, acm.learner_width, acm.out_features
        self.k, self.activation, self.out_features = k, acm.activation, d_out
        with torch.no_grad():
            # learners are contiguous blocks of the hidden layer: learner i is columns i*h..(i+1)*h
            w1 = acm.w1[:k].permute(1, 0, 2).reshape(d_in, k * h)
            self.fc1_weight = nn.Parameter(w1.t().contiguous(), requires_grad=False)
            self.fc1_bias = nn.Parameter(acm.b1[:k].reshape(-1).clone(), requires_grad=False) \
                if acm.b1 is not None else None
            self.fc2_weight = nn.Parameter(acm.w2[:k].reshape(k * h, d_out).t().contiguous(), requires_grad=False)
            self.fc2_bias = nn.Parameter(acm.b2.clone(), requires_grad=False) if acm.b2 is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k == 0:
            y = x.new_zeros(*x.shape[:-1], self.out_features)
            return y + self.fc2_bias if self.fc2_bias is not None else y
        hid = apply_activation(F.linear(x, self.fc1_weight, self.fc1_bias), self.activation)
        return F.linear(hid, self.fc2_weight, self.fc2_bias)


def static_acms(model: nn.Module) -> dict:
    """{name: k} for every ACM that runs a fixed k (a --static checkpoint, or under fixed_k)."""
    return {n: m.forced_k for n, m in acm_modules(model) if m.forced_k is not None}


@contextlib.contextmanager
def sliced(root: nn.Module):
    """Swap every static ACM below `root` for its SlicedMlp while the block runs; `root` must not
    be an ACM itself (export wraps the model, so it never is)."""
    swapped = []
    try:
        for name, m in acm_modules(root):
            if m.forced_k is None:
                continue
            parent, _, child = name.rpartition(".")
            owner = root.get_submodule(parent)
            setattr(owner, child, SlicedMlp(m, m.forced_k))
            swapped.append((owner, child, m))
        yield len(swapped)
    finally:
        for owner, child, m in reversed(swapped):
            setattr(owner, child, m)
