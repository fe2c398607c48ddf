"""One model, any budget (issue 17): the accuracy and the latency of one ACM checkpoint across the
budgets of its knob, next to models converted at single budgets.

    python -m benchmarks.budget_curve --model RANGE.acm.safetensors --singles 0.25=A.acm.safetensors
        0.5=B.acm.safetensors 0.75=C.acm.safetensors [--task minilm-fortunes] [--budgets 0.25 0.375 ...]
        [--batches 1 8] [--rounds 20] [--work DIR] [--readme]

Accuracy: `acmtool eval` of the model at each budget on the task's held-out samples, and at each
single model's budget against that model (`--budget B --baseline SINGLE`: the paired difference,
drop-in probe and mean cosine); cached in --work by the checkpoints' sha256. Latency: the dense
ONNX model, the model's ONNX at each budget (its `budget` input fed) and each single model's ONNX,
interleaved round by round on real held-out batches; latency is the median over rounds of each
time over the dense time.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Optional

import numpy as np

from benchmarks.pareto_latency import (TASKS, WARMUP, _read_json, _stamp, _write_json, dense_onnx, feeds_for,
                                       held_out, held_out_batches, onnx_of, task_metric)

CURVE = (0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)


def _parse_singles(items: list[str]) -> dict:
    out = {}
    for item in items:
        budget, _, path = item.partition("=")
        out[float(budget)] = Path(path)
    return out


def _cached_eval(work: Path, name: str, key: dict, log, **kwargs) -> dict:
    from acmtool.train.evaluate_checkpoint import evaluate_checkpoint
    cache = work / f"{name}.json"
    old = _read_json(cache)
    if old is not None and old.get("key") == key:
        return old["report"]
    log(f"evaluating: {name}")
    report = evaluate_checkpoint(**kwargs)
    _write_json(cache, {"key": key, "report": report})
    return report


def accuracy(task, model: Path, singles: dict, budgets, work: Path, log=print) -> tuple[list, dict]:
    """(curve rows: the model at each budget; {budget: the model against the single model there})."""
    # the drop-in probe and the cosine are the figures compared: no refit probe (a pass over the
    # probe's training data per model and budget, the larger part of the time)
    common = dict(data=task.data, split=task.split, max_samples=task.eval_max_samples, refit=False)
    stamp = _stamp(model)
    curve = _cached_eval(work, f"{task.name}-curve", {"model": stamp, "budgets": list(budgets), **common}, log,
                         path=model, budgets=list(budgets), **common)["budget_curve"]
    against = {b: _cached_eval(work, f"{task.name}-at{b}-vs-single", {"model": stamp, "single": _stamp(p), **common},
                               log, path=model, budget=b, baseline=p, **common)
               for b, p in sorted(singles.items())}
    return curve, against


def latency(task, model: Path, singles: dict, budgets, batch: int, rounds: int, threads: Optional[int],
            work: Path) -> dict:
    """{name: latency / dense} with names 'knob@B' and 'single@B'."""
    from acmtool.runtime.bench import time_interleaved
    from acmtool.runtime.session import session
    dataset, collate = held_out(task, model)
    batches = held_out_batches(dataset, collate, batch, rounds)
    paths = {"dense": dense_onnx(task, work, model), "knob": onnx_of(model),
             **{f"single@{b:g}": onnx_of(p) for b, p in singles.items()}}
    sessions = {n: session(p, threads=threads, options=_no_spinning()) for n, p in paths.items()}
    feeds = {n: [feeds_for(s, b) for b in batches] for n, s in sessions.items()}

    def runner(name: str, budget: Optional[float] = None, primer: bool = False):
        calls, sess, fs = itertools.count(), sessions[name], feeds[name]
        extra = {} if budget is None else {"budget": np.array(budget, dtype=np.float32)}
        if primer:  # the untimed run before each timed one: the first batch, the cycle left as it is
            return lambda: sess.run(None, {**fs[0], **extra})
        return lambda: sess.run(None, {**fs[next(calls) % len(fs)], **extra})
    named = {"dense": ("dense", None), **{f"knob@{b:g}": ("knob", b) for b in budgets},
             **{n: (n, None) for n in paths if n.startswith("single@")}}
    runs = {k: runner(*v) for k, v in named.items()}
    times = time_interleaved(runs, WARMUP, rounds, primers={k: runner(*v, primer=True) for k, v in named.items()})
    return {n: float(np.median(t / times["dense"])) for n, t in times.items()}


def _no_spinning():
    """Session options whose intra-op threads sleep between runs: with a dozen sessions taking turns
    on 2 cores, the threads of the one that just ran otherwise spin on, and slow the next one
    (a first run had the knob model at budget 1.0 at 0.36x the dense model's batch-1 time)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # the budget input is an overridable initializer, by design
    return opts


def rows_of(curve: list, against: dict, lat: dict) -> list[dict]:
    rows = []
    for r in curve:
        name, value, original, vs = task_metric(r)
        rows.append({"model": "one model (knob)", "budget": r["budget"], "achieved": r["achieved_budget"],
                     "metric": name, "accuracy": value, "original": original, "vs_original": vs["diff"],
                     "vs_original_se": vs["se"], "mean_cosine": r.get("mean_cosine"),
                     **{f"latency_b{b}": v.get(f"knob@{r['budget']:g}") for b, v in lat.items()}})
    for b, rep in sorted(against.items()):
        single = rep["baseline"]
        name, value, original, vs = task_metric(single)
        key = "dropin_probe" if rep["task"] == "embedding" else "accuracy"
        row = {"model": "converted at this budget", "budget": b, "achieved": single["achieved_budget"],
               "metric": name, "accuracy": value, "original": original, "vs_original": vs["diff"],
               "vs_original_se": vs["se"], "mean_cosine": single.get("mean_cosine"),
               "knob_minus_single": rep["vs_baseline"][key]["diff"],
               "knob_minus_single_se": rep["vs_baseline"][key]["se"],
               "knob_achieved": rep["achieved_budget"],
               **{f"latency_b{bb}": v.get(f"single@{b:g}") for bb, v in lat.items()}}
        if "cosine" in rep["vs_baseline"]:
            row["cosine_knob_minus_single"] = rep["vs_baseline"]["cosine"]["diff"]
            row["cosine_knob_minus_single_se"] = rep["vs_baseline"]["cosine"]["se"]
        rows.append(row)
    return rows


def render(rows: list[dict], batches) -> str:
    from acmtool.cli.format import table
    head = ["model", "budget", "achieved", "metric", "accuracy %", "- original (s.e.)", "cosine",
            "knob - single (s.e.)", "cosine knob - single"] + [f"latency / dense b{b}" for b in batches]
    body = []
    for r in rows:
        pm = (lambda k: f"{100 * r[k]:+.2f} +- {100 * r[k + '_se']:.2f}" if r.get(k) is not None else "-")
        body.append([r["model"], f"{r['budget']:g}", f"{r['achieved']:.3f}", r["metric"], f"{100 * r['accuracy']:.2f}",
                     pm("vs_original"), f"{r['mean_cosine']:.4f}" if r.get("mean_cosine") is not None else "-",
                     pm("knob_minus_single"),
                     f"{r['cosine_knob_minus_single']:+.4f} +- {r['cosine_knob_minus_single_se']:.4f}"
                     if r.get("cosine_knob_minus_single") is not None else "-"] +
                    [f"{r[f'latency_b{b}']:.3f}" if r.get(f"latency_b{b}") is not None else "-" for b in batches])
    return table(head, body)


def plot(rows: list[dict], batches, path: Path) -> Path:
    """Left: accuracy against budget (error bars: 2 paired s.e. against the original); right:
    latency / dense against budget, per batch size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    knob = sorted((r for r in rows if r["model"].startswith("one")), key=lambda r: r["budget"])
    single = sorted((r for r in rows if not r["model"].startswith("one")), key=lambda r: r["budget"])
    fig, (acc, lat) = plt.subplots(1, 2, figsize=(10, 4))
    for pts, fmt, label in ((knob, "o-", "one model, budget knob"), (single, "s", "converted at each budget")):
        if pts:
            acc.errorbar([r["budget"] for r in pts], [100 * r["accuracy"] for r in pts],
                         yerr=[200 * r["vs_original_se"] for r in pts], fmt=fmt, capsize=3, label=label)
    if knob:
        acc.axhline(100 * knob[0]["original"], color="gray", ls=":", label="original")
        acc.set_ylabel(f"{knob[0]['metric']} %")
    acc.set_xlabel("budget")
    acc.legend(fontsize=7)
    acc.grid(alpha=0.3)
    for b in batches:
        lat.plot([r["budget"] for r in knob], [r[f"latency_b{b}"] for r in knob], "o-", label=f"knob, batch {b}")
        lat.plot([r["budget"] for r in single], [r[f"latency_b{b}"] for r in single], "s", label=f"single, batch {b}")
    lat.axhline(1.0, color="gray", ls=":", label="dense")
    lat.set_xlabel("budget")
    lat.set_ylabel("latency / dense (ONNX Runtime CPU)")
    lat.legend(fontsize=7)
    lat.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> list[dict]:
    import os

    from benchmarks.__main__ import RESULTS, with_ext, write
    from benchmarks.machine import tag
    p = argparse.ArgumentParser(prog="python -m benchmarks.budget_curve", description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="the checkpoint whose knob is measured")
    p.add_argument("--singles", nargs="*", default=[], metavar="B=CKPT", help="models converted at one budget each")
    p.add_argument("--task", choices=sorted(TASKS), default="minilm-fortunes")
    p.add_argument("--budgets", type=float, nargs="+", default=list(CURVE))
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--work", type=Path, default=Path.home() / ".cache" / "acmtool" / "budget-curve")
    p.add_argument("--name", default=None, help="the result files' name (default: the task's)")
    p.add_argument("--readme", action="store_true", help="also rewrite the README's budget-curve block of the task "
                   "(budget-curve for minilm-fortunes, budget-curve-TASK for the others)")
    a = p.parse_args(argv)
    task, singles = TASKS[a.task], _parse_singles(a.singles)
    a.work.mkdir(parents=True, exist_ok=True)
    curve, against = accuracy(task, a.model, singles, a.budgets, a.work)
    lat = {b: latency(task, a.model, singles, a.budgets, b, a.rounds, a.threads, a.work) for b in a.batches}
    rows = rows_of(curve, against, lat)
    text = render(rows, a.batches)
    print(text)
    stem = RESULTS / f"budget-curve-{a.name or a.task}-{tag()}"
    write(rows, stem, {"model": str(a.model), "singles": {str(b): str(p) for b, p in singles.items()},
                       "rounds": a.rounds, "threads": a.threads})
    png = plot(rows, a.batches, with_ext(stem, ".png"))
    print(f"wrote {png}")
    if a.readme:
        from benchmarks import readme
        block = "budget-curve" if a.task == "minilm-fortunes" else f"budget-curve-{a.task}"
        readme.update({block: readme.indented(text) + readme.image(png, alt=f"one model across budgets ({a.task})")})
    return rows


if __name__ == "__main__":
    main()
