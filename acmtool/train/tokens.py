"""Real tokens: padding left out wherever the attention mask lines up with a block's tokens."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


def real_tokens(t: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """[..., D] -> [tokens, D]: only the real (unmasked) tokens where the mask has t's leading shape,
    else every token (timm ViTs have no mask; an encoder-decoder's decoder tokens do not line up
    with the encoder's mask). Inference never pays for padding, so no budget, label or loss should
    count it."""
    if mask is not None and tuple(mask.shape) == tuple(t.shape[:-1]):
        return t[mask.bool()]
    return t.reshape(-1, t.shape[-1])


@torch.no_grad()
def real_inputs(model: nn.Module, modules: dict, batches, device) -> dict:
    """{name: [tokens, D]}: the real input tokens of each of `modules` ({name: module}) over the
    batches, the model in eval mode (left so)."""
    from acmtool.io.call import run_model, token_mask
    from acmtool.train.loop import to_device
    cache, handles = {name: [] for name in modules}, []
    mask_box = {}
    for name, m in modules.items():
        def hook(mod, inp, out, name=name):
            cache[name].append(real_tokens(inp[0], mask_box.get("mask")))
        handles.append(m.register_forward_hook(hook))
    model.eval()
    try:
        for inputs in batches:
            inputs = to_device(inputs, device)
            mask_box["mask"] = token_mask(inputs, model)
            run_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in cache.items() if v}
