"""Real tokens: padding left out wherever the attention mask lines up with a block's tokens."""
from __future__ import annotations

from typing import Optional

import torch


def real_tokens(t: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """[..., D] -> [tokens, D]: only the real (unmasked) tokens where the mask has t's leading shape,
    else every token (timm ViTs have no mask; an encoder-decoder's decoder tokens do not line up
    with the encoder's mask). Inference never pays for padding, so no budget, label or loss should
    count it."""
    if mask is not None and tuple(mask.shape) == tuple(t.shape[:-1]):
        return t[mask.bool()]
    return t.reshape(-1, t.shape[-1])
