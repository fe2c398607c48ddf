"""How much better could the gates be? The ACM with its gates replaced by the oracle.

For every test batch the loss-aware labels (acmtool.train.losses.loss_aware_gate_labels: the
allocation at the budget over every block that costs the output least, from the original's
block inputs and a Fisher probe of its output) are computed on the test images themselves and
replayed as each token's k. No deployable gate can see the test output's gradient, so this is a
ceiling for gates trained on those labels with the model's learners as they are: if the oracle
does not beat the static model, better gates alone cannot; if it does by far, gate capacity and
training are where accuracy is left.

    python -m benchmarks.oracle_gates ACM.acm.safetensors --baseline STATIC.acm.safetensors \
        --data fashion-mnist --max-samples 1600 [--json out.json]

Prints the trained gates, the oracle and the baseline on the same test samples (drop-in probe,
cosine; classifiers: accuracy), each difference with its paired standard error. With --uniform,
also the ACM's own learners at k = budget x N for every token: gates - uniform is what the
allocation buys with these learners, uniform - baseline what training nested learners for every
k costs against a static model trained for one.
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn as nn

from acmtool.data.length_batches import eval_loader
from acmtool.io.atomic import atomic_path
from acmtool.io.call import run_model
from acmtool.io.checkpoint import load
from acmtool.io.sources import load_original
from acmtool.layers.acm import acm_modules
from acmtool.layers.control import fixed_k
from acmtool.train.capture import SiteCapture
from acmtool.train.evaluate import compare, evaluate
from acmtool.train.evaluate_checkpoint import split_options
from acmtool.train.feature_scale import embedding_scale
from acmtool.train.losses import loss_aware_gate_labels
from acmtool.train.sensitivity import PROBES


class OracleGates(nn.Module):
    """The student run with every ACM's k replayed from the loss-aware labels of its own batch."""

    def __init__(self, student: nn.Module, teacher: nn.Module, budget: float, scale, probes: int = PROBES,
                 seed: int = 0):
        super().__init__()
        self.student, self.budget, self.scale, self.probes = student, budget, scale, probes
        info = getattr(student, "acmtool_info", {}) or {}
        self.capture = SiteCapture(teacher, student, info.get("targets", "mlp"))
        self.acms = dict(acm_modules(student))
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, *args, **kwargs):
        inputs = kwargs if kwargs else (args[0] if len(args) == 1 else args)
        _, caps = self.capture(inputs, sensitivity=True, generator=self.generator, probes=self.probes,
                               scale=self.scale)
        acms = [self.acms[n] for n in caps]
        labels = loss_aware_gate_labels(acms, list(caps.values()), self.budget)

        def replay(m, inp, k):  # the labels come flattened over real tokens: shape them as the ACM's tokens
            if k.numel() != inp[0].shape[:-1].numel():
                raise RuntimeError(f"{k.numel()} labels for {inp[0].shape[:-1].numel()} tokens (padding?)")
            m.replay_k = k.reshape(inp[0].shape[:-1])
        hooks = [acm.register_forward_pre_hook(lambda m, inp, k=choice + acm.min_k: replay(m, inp, k))
                 for acm, choice in zip(acms, labels)]
        try:
            with torch.no_grad():
                return run_model(self.student, inputs)
        finally:
            for h in hooks:
                h.remove()
            for acm in acms:
                acm.replay_k = None


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--baseline", help="a static (or any) checkpoint of the same original, scored beside")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--max-samples", type=int)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--probes", type=int, default=PROBES)
    p.add_argument("--uniform", action="store_true", help="also the ACM at k = budget x N for every token")
    p.add_argument("--no-oracle", dest="oracle", action="store_false", help="leave the oracle out")
    p.add_argument("--json")
    a = p.parse_args(argv)
    from acmtool.data import load_data
    torch.manual_seed(0)
    student = load(a.checkpoint).eval()
    info = student.acmtool_info
    if info.get("static") or info.get("budget") is None:
        raise SystemExit(f"{a.checkpoint}: the oracle replaces trained gates; give a gated ACM checkpoint")
    teacher = load_original(info["source"]).eval()
    opts = split_options(info)
    if a.max_samples is not None:
        opts["max_samples"] = a.max_samples
    task = load_data(a.data, teacher, info["source"], **opts)
    dataset = task.test if a.split == "test" else task.val
    loader = eval_loader(dataset, a.batch_size, task.collate, task.kind)
    probe = eval_loader(task.train, a.batch_size, task.collate, task.kind) if task.num_classes else None
    calib = [x for _, (x, _) in zip(range(8), eval_loader(task.train, 32, task.collate, task.kind))]
    scale = embedding_scale(teacher, calib, torch.device("cpu"))
    profile = info.get("flops_profile")
    gated, ev = evaluate(student, teacher, loader, "cpu", profile, probe_loader=probe)
    result = {"checkpoint": a.checkpoint, "data": a.data, "split": a.split, "budget": info["budget"], "gates": gated}
    rows = {"gates": ev.samples}
    if a.oracle:
        oracle = OracleGates(student, teacher, float(info["budget"]), scale, a.probes)
        # no refit probe for the oracle: its features of the probe's training data cost a Fisher probe each
        result["oracle"], ev_o = evaluate(oracle, teacher, loader, "cpu", profile, probe_loader=probe,
                                          original=ev.original, refit=False)
        rows["oracle"] = ev_o.samples
    if a.uniform:
        k = round(float(info["budget"]) * max(m.num_learners for _, m in acm_modules(student)))
        with fixed_k(student, k):
            result["uniform"], ev_u = evaluate(student, teacher, loader, "cpu", profile, probe_loader=probe,
                                               original=ev.original)
        result["uniform_k"] = k
        rows["uniform"] = ev_u.samples
    if a.baseline:
        base = load(a.baseline).eval()
        result["baseline_report"], ev_b = evaluate(base, teacher, loader, "cpu", base.acmtool_info.get("flops_profile"),
                                                   probe_loader=probe, original=ev.original)
        result["baseline"] = a.baseline
        rows["baseline"] = ev_b.samples
    names = list(rows)
    for i, x in enumerate(names):  # every pair, each difference paired on the same samples
        for y in names[i + 1:]:
            result[f"{y}_vs_{x}"] = d = compare(rows[y], rows[x])
            for metric, v in d.items():
                print(f"{y + ' - ' + x:22s} {metric:13s} {v['diff']:+.4f} +- {v['se']:.4f}")
    print("achieved budget: " + ", ".join(f"{n} {result[n if n != 'baseline' else 'baseline_report'].get('achieved_budget')}"
                                          for n in names))
    if a.json:
        with atomic_path(a.json) as tmp:
            tmp.write_text(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
