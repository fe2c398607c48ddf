"""Statistics from calibration inputs, caught by hooks on the original model."""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from acmtool.adapters.sites import MlpSite
from acmtool.io.call import run_model
from acmtool.ops.activations import apply_activation


@torch.no_grad()
def mean_abs_activations(model: nn.Module, sites: list, batches: Iterable) -> dict:
    """E|act(fc1(x))| per hidden neuron for every MlpSite, keyed by site path."""
    mlp_sites = [s for s in sites if isinstance(s, MlpSite)]
    sums = {s.path: torch.zeros(s.fc1.out_features) for s in mlp_sites}
    counts = {s.path: 0 for s in mlp_sites}
    handles = []
    for site in mlp_sites:
        def hook(_mod, _inp, out, site=site):
            a = apply_activation(out.float(), site.activation).reshape(-1, out.shape[-1])
            sums[site.path] += a.abs().sum(0).cpu()
            counts[site.path] += a.shape[0]
        handles.append(site.fc1.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(batches, desc="calibration", unit="batch", leave=False):
            run_model(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {p: sums[p] / counts[p] for p in sums if counts[p] > 0}
