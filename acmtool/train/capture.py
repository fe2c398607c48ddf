"""Catch, with hooks on the frozen original model, each converted block's input and output."""
from __future__ import annotations

import torch
import torch.nn as nn

from acmtool.adapters import find_sites
from acmtool.adapters.sites import MlpSite
from acmtool.io.call import run_model
from acmtool.layers.acm import acm_modules
from acmtool.train.tokens import real_tokens


class SiteCapture:
    """For each ACM name of the student: (z, f(z)) from the teacher, flattened to [real tokens, D].

    MLP sites: z enters fc1, f(z) leaves fc2. Projections: z enters the Linear, f(z) leaves it;
    a fused qkv's output is split into the parts that the student's ACMs replaced.
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, targets: str):
        self.teacher = teacher
        sites = find_sites(teacher, targets)
        names = [n for n, _ in acm_modules(student)]
        self.pairs = []  # (acm names, module whose input is z, module whose output is f(z), parts)
        for site in sites:
            if isinstance(site, MlpSite):
                self.pairs.append(([site.path], site.fc1, site.fc2, 1))
            elif site.parts == 1:
                self.pairs.append(([site.path], site.linear, site.linear, 1))
            else:
                self.pairs.append(([f"{site.path}.parts.{j}" for j in range(site.parts)], site.linear, site.linear,
                                   site.parts))
        covered = [n for p in self.pairs for n in p[0]]
        if covered != names:
            raise RuntimeError(f"teacher sites {covered[:3]}... do not line up with the student's ACMs {names[:3]}...")

    @torch.no_grad()
    def __call__(self, inputs) -> tuple[object, dict]:
        """Run the teacher; returns (its output, {acm name: (z, f(z))})."""
        caught, handles = {}, []
        for i, (_, first, last, _) in enumerate(self.pairs):
            handles.append(first.register_forward_hook(
                lambda m, inp, out, i=i: caught.__setitem__((i, "in"), inp[0].detach())))
            handles.append(last.register_forward_hook(
                lambda m, inp, out, i=i: caught.__setitem__((i, "out"), out.detach())))
        try:
            output = run_model(self.teacher, inputs)
        finally:
            for h in handles:
                h.remove()
        mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
        result = {}
        for i, (names, _, _, parts) in enumerate(self.pairs):
            if (i, "in") not in caught:
                continue  # a block the input did not reach (e.g. a decoder without decoder inputs)
            z, y = caught[(i, "in")], caught[(i, "out")]
            real = real_tokens(z, mask)
            if len(real):  # padding left out; a batch of padding only keeps every token
                z, y = real, real_tokens(y, mask)
            z, y = z.reshape(-1, z.shape[-1]), y.reshape(-1, y.shape[-1])
            for j, chunk in enumerate(y.chunk(parts, dim=-1)):
                result[names[j]] = (z, chunk)
        return output, result
