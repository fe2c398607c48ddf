"""Greedy CTC decoding (wav2vec2): each real frame's most likely token, repeats merged, blanks
dropped: what transformers' Wav2Vec2CTCTokenizer.batch_decode does with the argmax ids."""
from __future__ import annotations

import torch

from acmtool.io.call import frame_mask, run_model
from acmtool.runtime.ctc_text import collapse


def ctc_greedy(logits: torch.Tensor, frames: torch.Tensor, blank: int) -> list:
    """logits [B, T, V], frames [B] the real frames of each row: each row's collapsed ids."""
    best = logits.argmax(-1).tolist()
    return [collapse(row[: int(n)], blank) for row, n in zip(best, frames.tolist())]


@torch.no_grad()
def ctc_transcribe(model, inputs: dict, blank: int) -> list:
    """Each utterance's collapsed ids from one pass of a CTC model over a batch of `input_values`
    (with its attention mask where padded). Restores the model's training flags."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        logits = run_model(model, inputs).logits
    finally:
        for m, t in flags.items():
            m.train(t)
    mask = inputs.get("attention_mask")
    if mask is None:
        frames = torch.full((logits.shape[0],), logits.shape[1])
    else:
        frames = frame_mask(model, mask).sum(-1)
    return ctc_greedy(logits, frames, blank)
