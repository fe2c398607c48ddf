"""Catch, with hooks on the frozen original model, each converted block's input and output."""
from __future__ import annotations

import torch
import torch.nn as nn

from acmtool.adapters import find_sites
from acmtool.adapters.sites import MlpSite
from acmtool.io.call import run_model, token_mask
from acmtool.layers.acm import acm_modules
from acmtool.train.sensitivity import fisher_probe
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
        if sorted(covered) != sorted(names):
            raise RuntimeError(f"teacher sites {covered[:3]}... do not line up with the student's ACMs {names[:3]}...")
        # in the student's module order (its ACM lists): the adapters list q, k, v, while a model may
        # register them in another order (Whisper's attention: k, v, q)
        position = {n: i for i, n in enumerate(names)}
        self.pairs.sort(key=lambda pair: position[pair[0][0]])

    def __call__(self, inputs, sensitivity: bool = False, generator=None, probes: int = 1,
                 scale=None) -> tuple[object, dict]:
        """Run the teacher; returns (its output, {acm name: (z, f(z))}), or with sensitivity
        {acm name: (z, f(z), g)}: how much each token's block output matters. g is the gradient of
        a Fisher probe of the output with respect to f(z) (acmtool.train.sensitivity); with probes
        P > 1, the root mean square of P of them (only g^2 is used: the mean of P samples of the
        Fisher's diagonal, P times less variance). scale: an embedding's per-dimension spread, for
        the probe (fisher_probe)."""
        if probes < 1:
            raise ValueError(f"probes must be at least 1; got {probes}")
        caught, handles, deltas = {}, [], {}

        def leave(m, inp, out, i):
            caught[(i, "out")] = out.detach()
            if not sensitivity:
                return None
            # a zero added to the output: its gradient is the output's, and no parameter needs one
            deltas[i] = torch.zeros_like(out, requires_grad=True)
            return out + deltas[i]
        for i, (_, first, last, _) in enumerate(self.pairs):
            handles.append(first.register_forward_hook(
                lambda m, inp, out, i=i: caught.__setitem__((i, "in"), inp[0].detach())))
            handles.append(last.register_forward_hook(lambda m, inp, out, i=i: leave(m, inp, out, i)))
        mask = token_mask(inputs, self.teacher)
        try:
            with torch.set_grad_enabled(sensitivity):
                output = run_model(self.teacher, inputs)
                if sensitivity:
                    order = sorted(deltas)
                    grads = _probe_rms(output, mask, generator, [deltas[i] for i in order], probes, scale)
                    for i, g in zip(order, _per_sample(grads, mask)):
                        caught[(i, "grad")] = g
        finally:
            for h in handles:
                h.remove()
        if sensitivity:
            output = _detached(output)
        result = {}
        for i, (names, _, _, parts) in enumerate(self.pairs):
            if (i, "in") not in caught:
                continue  # a block the input did not reach (e.g. a decoder without decoder inputs)
            ts = [caught[(i, "in")], caught[(i, "out")]] + ([caught[(i, "grad")]] if sensitivity else [])
            real = real_tokens(ts[0], mask)
            if len(real):  # padding left out; a batch of padding only keeps every token
                ts = [real_tokens(t, mask) for t in ts]
            z, *outs = [t.reshape(-1, t.shape[-1]) for t in ts]
            chunks = list(zip(*[o.chunk(parts, dim=-1) for o in outs]))
            for j, chunk in enumerate(chunks):
                result[names[j]] = (z, *chunk)
        return output, result


def _probe_rms(output, mask, generator, deltas: list, probes: int, scale=None) -> list:
    """sqrt(mean over P probes of g^2) for each delta; g = 0 where the output does not depend on it."""
    sums = [torch.zeros_like(d) for d in deltas]
    for p in range(probes):
        grads = torch.autograd.grad(fisher_probe(output, mask, generator, scale), deltas, allow_unused=True,
                                    retain_graph=p < probes - 1)
        for s, g in zip(sums, grads):
            if g is not None:
                s.add_(g.detach().pow(2))
    return [(s / probes).sqrt() for s in sums]


def _per_sample(grads: list, mask) -> list:
    """Every sample's gradients scaled to the same total: a sure prediction has a small Fisher
    information everywhere, which a gate that sees one token cannot tell; what it can tell is which
    tokens of a sample, and which blocks, matter more. (Gradients whose first dimension is not the
    batch's are left as they are.)"""
    batch = mask.shape[0] if mask is not None else grads[0].shape[0] if grads else 0
    total = None
    for g in grads:
        if g.dim() >= 2 and g.shape[0] == batch:
            sq = g.pow(2)
            if mask is not None and tuple(mask.shape) == tuple(g.shape[:-1]):
                sq = sq * mask.to(sq.dtype).unsqueeze(-1)
            part = sq.reshape(batch, -1).sum(1)
            total = part if total is None else total + part
    if total is None:
        return grads
    scale = (total.mean() / total.clamp(min=1e-12 * float(total.mean()) + 1e-30)).sqrt()
    return [g * scale.view(-1, *([1] * (g.dim() - 1))) if g.dim() >= 2 and g.shape[0] == batch else g
            for g in grads]


def _detached(output):
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, dict):  # ModelOutput is a dict
        for k, v in output.items():
            if isinstance(v, torch.Tensor):
                output[k] = v.detach()
        return output
    if isinstance(output, (tuple, list)):
        return type(output)(_detached(v) for v in output)
    return output
