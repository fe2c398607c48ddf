"""Calibration batches cut to the tokens a measurement needs.

Whisper's encoder makes 1500 frames of every clip (30 s, mostly padding silence), so the
conversion's 8 calibration batches of 32 clips are 384000 tokens per encoder block. Neuron
importance, budget calibration and the budget table ran forward passes over all of them: on 120
Asterisk clips, 12 of a 19-minute conversion went to averages that a few ten thousand tokens give
to well within the budget's tolerance. Image and text batches (32 x 65 DINOv2 patches, 32
sentences) hold far fewer tokens and are left whole."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn

from acmtool.train.tokens import real_inputs

CALIBRATION_TOKENS = 65536  # per block: neuron importance and budget calibration


def batch_size(inputs) -> Optional[int]:
    """The leading size of a batch's first tensor (tensor, tuple, list or dict); None without one."""
    if isinstance(inputs, torch.Tensor):
        return inputs.shape[0] if inputs.dim() else None
    values = inputs.values() if isinstance(inputs, dict) else inputs if isinstance(inputs, (tuple, list)) else ()
    for v in values:
        n = batch_size(v)
        if n is not None:
            return n
    return None


def first_rows(inputs, n: int):
    """The batch's first n samples: every tensor cut along its leading dimension."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:n] if inputs.dim() else inputs
    if isinstance(inputs, dict):
        return {k: first_rows(v, n) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(first_rows(v, n) for v in inputs)
    return inputs


def first_samples(batches: list, n: int) -> list:
    """The batches' first n samples (at least one batch): the batches before them whole, the last one cut."""
    out, left = [], max(1, n)
    for b in batches:
        size = batch_size(b)
        if size is None:  # nothing to count by: keep every batch
            return list(batches)
        out.append(b if size <= left else first_rows(b, left))
        left -= size
        if left <= 0:
            break
    return out


def tokens_per_sample(model: nn.Module, modules: list, batch, device) -> float:
    """The real tokens per sample that the busiest of `modules` receives, on one batch."""
    was_training = model.training
    try:
        seen = real_inputs(model, dict(enumerate(modules)), [batch], device)
    finally:
        model.train(was_training)
    return max((len(z) for z in seen.values()), default=0) / max(batch_size(batch) or 1, 1)


def cap_tokens(batches: list, per_sample: float, limit: int) -> list:
    """The first batches, the last one cut, that hold `limit` tokens at `per_sample` tokens a sample."""
    if per_sample <= 0:
        return list(batches)
    return first_samples(batches, math.ceil(limit / per_sample))


def calibration_batches(model: nn.Module, modules: list, batches: list, device,
                        limit: int = CALIBRATION_TOKENS) -> list:
    """`batches` cut to about `limit` real tokens at the busiest of `modules` (all of them if they
    hold fewer). Costs one forward pass of the first batch."""
    if not batches or not modules:
        return list(batches)
    per_sample = tokens_per_sample(model, modules, batches[0], device)
    return cap_tokens(batches, per_sample, limit)
