"""The activations a learner may use, by the names the ONNX operator knows."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "identity")


def apply_activation(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "gelu":
        return F.gelu(x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu(x)
    if name == "silu":
        return F.silu(x)
    if name == "identity":
        return x
    raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


def apply_activation_(x: torch.Tensor, name: str) -> torch.Tensor:
    """In place where torch allows it: the grouped path reuses its hidden buffer."""
    if name == "relu":
        return F.relu_(x)
    if name == "silu":
        return F.silu(x, inplace=True)
    if name == "gelu":
        return torch.ops.aten.gelu_(x)
    if name == "gelu_tanh":
        return torch.ops.aten.gelu_(x, approximate="tanh")
    return apply_activation(x, name)
