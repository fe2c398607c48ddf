"""Call a model on a batch, and find the tensor that matters in what it returns."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


def run_model(model: nn.Module, batch):
    """A batch is a tensor (model(x)), a tuple (model(*b)) or a dict of keyword arguments."""
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    return model(batch)


def main_output(output, attention_mask: Optional[torch.Tensor] = None) -> tuple[str, torch.Tensor]:
    """("logits", [B, C]) for classifiers; ("embedding", [B, D]) for models without a head:
    the mean of the last hidden states over real (unmasked) tokens, as sentence-transformers pools."""
    if isinstance(output, torch.Tensor):
        return ("logits", output) if output.dim() == 2 else ("embedding", _pool(output, attention_mask))
    logits = getattr(output, "logits", None)
    if logits is not None:
        return "logits", logits
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and isinstance(output, (tuple, list)):
        hidden = output[0]
    if hidden is None:
        raise TypeError(f"cannot find logits or hidden states in a {type(output).__name__}")
    return "embedding", _pool(hidden, attention_mask)


def _pool(hidden: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    if hidden.dim() == 2:
        return hidden
    if mask is None:
        return hidden.mean(1)
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def hidden_states(output) -> Optional[torch.Tensor]:
    h = getattr(output, "last_hidden_state", None)
    if h is None and isinstance(output, torch.Tensor) and output.dim() == 3:
        h = output
    return h
