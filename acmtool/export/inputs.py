"""Inputs to check an exported model with: a dataset's validation split, or random ones."""
from __future__ import annotations

from typing import Optional

import torch

from acmtool.io.sources import example_inputs


def verification_batches(model, data: Optional[str], count: int, batch_size: int) -> list:
    spec = model.acmtool_info["source"]
    if data:
        from acmtool.data import load_data
        from torch.utils.data import DataLoader
        task = load_data(data, model, spec)
        loader = DataLoader(task.val, batch_size=batch_size, collate_fn=task.collate)
        return [x for _, (x, _) in zip(range(count), loader)]
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(count):
        one = example_inputs(model, spec)
        if isinstance(one, dict):
            batch = {}
            for k, v in one.items():
                v = v.repeat(batch_size, *([1] * (v.dim() - 1)))
                if k == "input_ids":
                    v = torch.randint(0, int(one[k].max()) + 1, v.shape, generator=g)
                batch[k] = v
        else:
            batch = torch.randn(batch_size, *one.shape[1:], generator=g)
        batches.append(batch)
    return batches
