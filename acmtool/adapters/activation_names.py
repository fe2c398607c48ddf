"""Map a model's activation module to the learner activation names of DESIGN.md."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

# Class names (torch, timm, transformers) whose forward is exactly one of our activations.
_BY_CLASS = {
    "ReLU": "relu",
    "SiLU": "silu",
    "SiLUActivation": "silu",
    "Swish": "silu",
    "GELUActivation": "gelu",  # transformers' exact (erf) GELU
    "NewGELUActivation": "gelu_tanh",
    "GELUTanh": "gelu_tanh",
    "PytorchGELUTanh": "gelu_tanh",
    "FastGELUActivation": "gelu_tanh",  # same tanh formula as gelu_tanh
    "GELUPytorchTanh": "gelu_tanh",
    "Identity": "identity",
}


def activation_name(act) -> Optional[str]:
    """The learner activation that computes exactly what `act` does, or None."""
    if isinstance(act, nn.GELU):
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(act.approximate)
    name = type(act).__name__
    if name == "GELU":  # timm's GELU wrapper keeps torch's `approximate` semantics
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(getattr(act, "approximate", "none"))
    if name == "GELUActivation" and getattr(act, "act", None) is not None:
        fn = getattr(act.act, "__name__", "")
        return "gelu" if fn in ("gelu", "_gelu_python") else None
    return _BY_CLASS.get(name)
