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


def token_mask(inputs, model: Optional[nn.Module] = None) -> Optional[torch.Tensor]:
    """The mask of a batch's real tokens: the attention mask, else (an encoder-decoder fed its
    decoder's inputs, such as Whisper's) the decoder's. Users of it apply it only where a tensor's
    leading shape matches it, so an encoder's tokens all count while the decoder's padding does not.
    A waveform model (wav2vec2: `input_values`) given as `model` gets its mask over frames."""
    if not isinstance(inputs, dict):
        return None
    mask = inputs.get("attention_mask")
    if mask is not None and model is not None and "input_values" in inputs:
        return frame_mask(model, mask)
    return mask if mask is not None else inputs.get("decoder_attention_mask")


def frame_mask(model: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """A waveform model's mask over samples [B, S] as one over the frames its feature encoder's
    convolutions make of them [B, T]; the mask as is for a model without such an encoder."""
    lengths_of = getattr(getattr(model, "module", model), "_get_feat_extract_output_lengths", None)
    if lengths_of is None:
        return mask
    lengths = lengths_of(mask.sum(-1))
    frames = int(lengths_of(torch.tensor(mask.shape[-1])))
    return (torch.arange(frames, device=mask.device)[None] < lengths[:, None].to(mask.device)).long()


def main_output(output, attention_mask: Optional[torch.Tensor] = None) -> tuple[str, torch.Tensor]:
    """("logits", [B, C]) for classifiers; ("embedding", [B, D]) for models without a head:
    the mean of the last hidden states over real (unmasked) tokens, as sentence-transformers pools.
    Per-token logits ([B, T, V]: a sequence-to-sequence model's decoder) come as ("logits",
    [tokens, V]), one row per real token: every token is a prediction to distil."""
    if isinstance(output, torch.Tensor):
        return ("logits", output) if output.dim() == 2 else ("embedding", _pool(output, attention_mask))
    logits = getattr(output, "logits", None)
    if logits is not None:
        return "logits", per_token(logits, attention_mask) if logits.dim() == 3 else logits
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and isinstance(output, (tuple, list)):
        hidden = output[0]
    if hidden is None:
        raise TypeError(f"cannot find logits or hidden states in a {type(output).__name__}")
    return "embedding", _pool(hidden, attention_mask)


def per_token(t: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """[B, T, ...] -> [tokens, ...]: the real tokens where the mask is [B, T], else every token."""
    if mask is not None and tuple(mask.shape) == tuple(t.shape[:2]):
        return t[mask.bool()]
    return t.reshape(-1, *t.shape[2:])


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
