"""Several optimiser steps per batch where a batch holds far more tokens than one step needs.

Distillation and gate pre-training fit each block on its own captured tokens, so a step learns
about as much from a few thousand of them as from all. Whisper's encoder turns every utterance
into 1500 frames (30 s, mostly padding silence): a batch of 32 is 48000 tokens per block, and
one epoch of its 493 Asterisk prompts was 15 distillation steps and 8 gate steps, too few for the
gates to move from their initial weights (label accuracy 0.13 of 5 choices). Splitting each
captured batch into parts gives every token one step's use and many more steps for the same
forward passes of the original. Image and text batches (32 x 65 DINOv2 patches, 32 sentences)
are one part, as before."""
from __future__ import annotations

from typing import Optional

import torch

from acmtool.train.distributed import DistContext, all_max

DISTILL_TOKENS = 16384  # per block and step: the learners' gradients are a full MLP's backward
GATE_TOKENS = 4096  # the gates are tiny: many small steps


def token_chunks(captures: dict, limit: int, generator: Optional[torch.Generator],
                 ctx: Optional[DistContext] = None) -> Optional[list]:
    """None when every block's tokens fit `limit` (one step, every token). Else a list of parts,
    each a list (one per block, in the captures' order) of row indices: a random partition of
    each block's tokens into as many parts as its largest block needs, the same count on every
    process. A block with fewer tokens than parts has all of them in each part."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1; got {limit}")
    sizes = [ts[0].shape[0] for ts in captures.values()]
    parts = -(-max(sizes, default=0) // limit)
    if ctx is not None:  # a DDP step on one process needs one on every other
        parts = int(all_max(parts, ctx))
    if parts <= 1:
        return None
    chunks = [[] for _ in range(parts)]
    for (ts, rows) in zip(captures.values(), sizes):
        order = torch.randperm(rows, generator=generator).to(ts[0].device)
        each = -(-rows // parts)
        for j in range(parts):
            part = order[j * each:(j + 1) * each]
            chunks[j].append(part if len(part) else order)
    return chunks
