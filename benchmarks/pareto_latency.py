"""Accuracy against measured latency: the dense model, the static baseline (plain ONNX, stock ops)
and the ACM (custom-op ONNX) in ONNX Runtime, at several budgets, on real pre-trained models.

    python -m benchmarks.pareto_latency [--tasks minilm-fortunes dinov2-fashion] [--budgets 0.125 0.25 0.5 0.75]
        [--convert] [--work DIR] [--batches 1 8] [--rounds R] [--threads T] [--out DIR] [--readme]

Per task and budget, the ACM and the static checkpoint come from --work (default
~/.cache/acmtool/pareto); --convert makes the missing ones (`acmtool convert`, resumed where a run
was interrupted; tens of minutes each on 2 cores). Both are evaluated on the same held-out samples
against the original (`acmtool eval --baseline`): the task metric (the drop-in probe for embedding
models, accuracy for classifiers) with the paired standard error of ACM - original and of
ACM - static. Latency: the original's dense ONNX, the static plain ONNX and the ACM ONNX run
interleaved on real held-out batches (batch 1 and 8), one run of each per round in a rotating
order; a model's latency is reported as the median over rounds of its time / the dense time.
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from acmtool.cli.format import table

WORK = Path.home() / ".cache" / "acmtool" / "pareto"
BUDGETS = (0.125, 0.25, 0.5, 0.75)
BATCHES = (1, 8)
METHODS = ("static", "acm")  # static first: its conversion is the shorter one
WARMUP = 2


def _minilm() -> str:
    from benchmarks.accuracy_minilm import minilm_folder
    return minilm_folder()


def _dinov2() -> str:
    from benchmarks.dinov2_fixture import dinov2_folder
    return dinov2_folder()


def _dinov2_112() -> str:
    from benchmarks.dinov2_fixture import dinov2_folder_at
    return dinov2_folder_at(112)


@dataclass(frozen=True)
class Task:
    """One model and dataset: what `acmtool convert` and `acmtool eval` are given."""
    name: str
    model: Callable[[], str]  # the model argument of convert (built on demand: a fixture may be slow)
    data: str
    split: str  # the held-out samples scored: "test" where the dataset has a test set, else "val"
    options: dict = field(default_factory=dict)  # further ConvertOptions fields
    eval_max_samples: Optional[int] = None

    def checkpoint(self, work: Path, method: str, budget: float) -> Path:
        return work / f"{self.name}-{method}-b{budget}.acm.safetensors"


TASKS = {
    # fortunes has no test set: the validation split (1519 sentences) never seen by the conversion
    "minilm-fortunes": Task("minilm-fortunes", _minilm, "fortunes", "val"),
    # 1600 images: train 1440 (conversion and the probe's fit), val 160, test 1600 of the t10k file;
    # a conversion stays near 30 minutes on 2 cores at 224 px
    "dinov2-fashion": Task("dinov2-fashion", _dinov2, "fashion-mnist", "test", {"max_samples": 1600},
                           eval_max_samples=1600),
    # the same at 112 px (a quarter of the cost per step), so that 3000 images (train 2700) and two
    # fine-tuning epochs fit: the ACM's drop-in loss fell from 36 points (224 px above) to 3
    "dinov2-fashion-112": Task("dinov2-fashion-112", _dinov2_112, "fashion-mnist", "test",
                               {"max_samples": 3000, "finetune_epochs": 2.0}, eval_max_samples=1600),
}


def with_learners(task: Task, learners: int) -> Task:
    """The task with N learners per ACM (its static model then runs the whole number of them that the
    budget gives): checkpoints and results named TASK-lN, apart from the default's."""
    from dataclasses import replace
    return replace(task, name=f"{task.name}-l{learners}", options={**task.options, "num_learners": learners})


# DINOv2 at 112 px with 8 learners: at 0.125, 4 learners leave half the tokens without an MLP and
# lost to static by 6.25 points where 8 won (+5.38 +- 0.98 in the README's table, which shows this task)
TASKS["dinov2-fashion-112-l8"] = with_learners(TASKS["dinov2-fashion-112"], 8)


# --- checkpoints -----------------------------------------------------------------------------
def converted(task: Task, work: Path, method: str, budget: float, convert: bool, log=print) -> Optional[Path]:
    """The task's checkpoint at the budget: cached in work, made (or resumed) only when convert."""
    from acmtool.train.pipeline import run_folder
    path = task.checkpoint(work, method, budget)
    if path.is_file():
        return path
    if not convert:
        return None
    from acmtool.train.options import ConvertOptions, static_learners
    from acmtool.train.pipeline import convert as run_convert
    work.mkdir(parents=True, exist_ok=True)
    resume = (run_folder(path) / "state.pt").is_file()
    log(f"converting {path.name}{' (resuming)' if resume else ''}")
    started = time.time()
    options = dict(task.options)
    if method == "static":  # a whole number of learners per token: 0.125 is 1 of 8 learners
        options["num_learners"] = static_learners(budget, options.get("num_learners", 4))
    run_convert(ConvertOptions(model=task.model(), budget=budget, data=task.data, output=str(path),
                               static=method == "static", resume=resume, **options))
    _write_json(work / f"{path.name}.minutes.json", {"minutes": (time.time() - started) / 60, "resumed": resume})
    return path


def _write_json(path: Path, obj) -> None:
    from acmtool.io.atomic import atomic_path
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _stamp(path: Optional[Path]) -> Optional[str]:
    from acmtool.io.sources import file_sha256
    return None if path is None else file_sha256(path)


# --- accuracy --------------------------------------------------------------------------------
def evaluated(task: Task, work: Path, budget: float, acm: Optional[Path], static: Optional[Path],
              log=print) -> Optional[dict]:
    """`acmtool eval ACM --baseline STATIC` (or whichever exists) on the task's held-out samples;
    cached in work, keyed by the checkpoints' sha256."""
    from acmtool.train.evaluate_checkpoint import evaluate_checkpoint
    first = acm or static
    if first is None:
        return None
    cache = work / f"{task.name}-eval-b{budget}.json"
    key = {"acm": _stamp(acm), "static": _stamp(static), "split": task.split, "max_samples": task.eval_max_samples}
    old = _read_json(cache)
    if old is not None and old.get("key") == key:
        return old["report"]
    log(f"evaluating {task.name} at budget {budget} on the {task.split} split")
    report = evaluate_checkpoint(first, task.data, task.split, max_samples=task.eval_max_samples,
                                 baseline=static if acm is not None else None)
    _write_json(cache, {"key": key, "report": report})
    return report


def task_metric(report: dict) -> tuple[str, float, float, dict]:
    """(metric name, model's value, original's value, paired ACM - original) of an eval report."""
    if report["task"] == "embedding":
        return ("drop-in probe", report["student_probe_accuracy"], report["teacher_probe_accuracy"],
                report["vs_original"]["dropin_probe"])
    return "accuracy", report["student_accuracy"], report["teacher_accuracy"], report["vs_original"]["accuracy"]


def accuracy_rows(task: Task, budget: float, report: dict) -> dict:
    """{method: accuracy fields} for the ACM (with ACM - static) and the baseline in one report."""
    reports = {"static" if report.get("static") else "acm": report}
    if report.get("baseline"):
        reports["static"] = report["baseline"]
    rows = {}
    for method, r in reports.items():
        name, value, original, vs = task_metric(r)
        rows[method] = {"metric": name, "accuracy": value, "original_accuracy": original,
                        "vs_original": vs["diff"], "vs_original_se": vs["se"], "eval_samples": r["eval_samples"],
                        "achieved_budget": r["achieved_budget"], "k0_share": r.get("k0_share"),
                        "flops_ratio": r["flops"]["ratio"], "mean_cosine": r.get("mean_cosine")}
    if "acm" in rows and "vs_baseline" in report:
        key = "dropin_probe" if report["task"] == "embedding" else "accuracy"
        rows["acm"]["vs_static"] = report["vs_baseline"][key]["diff"]
        rows["acm"]["vs_static_se"] = report["vs_baseline"][key]["se"]
        if "cosine" in report["vs_baseline"]:
            rows["acm"]["cosine_vs_static"] = report["vs_baseline"]["cosine"]["diff"]
            rows["acm"]["cosine_vs_static_se"] = report["vs_baseline"]["cosine"]["se"]
    return rows


# --- latency ---------------------------------------------------------------------------------
def onnx_of(checkpoint: Path) -> Path:
    """NAME.acm.onnx beside the checkpoint (convert writes it; exported here if it is missing)."""
    from acmtool.export.onnx_export import export_checkpoint
    from acmtool.io.outputs import onnx_path
    path = onnx_path(checkpoint)
    return path if path.is_file() else export_checkpoint(checkpoint, path)


def dense_onnx(task: Task, work: Path, checkpoint: Path) -> Path:
    """The original model exported as it is (no ACM): the latency every other model is divided by."""
    from acmtool.export.onnx_export import export_onnx
    from acmtool.io.checkpoint import read_info
    from acmtool.io.sources import example_inputs, load_original
    path = work / f"{task.name}-dense.onnx"
    if path.is_file():
        return path
    spec = read_info(checkpoint)["source"]
    model = load_original(spec).eval()
    ex = example_inputs(model, spec)
    two = (lambda t: t.repeat(2, *([1] * (t.dim() - 1))))  # batch 2: torch.export keeps a batch of 1 static
    ex = {k: two(v) for k, v in ex.items()} if isinstance(ex, dict) else two(ex)
    return export_onnx(model, path, ex, "custom-op")


def held_out(task: Task, checkpoint: Path) -> tuple:
    """(dataset, collate) of the held-out samples that evaluated checks the checkpoint on."""
    from acmtool.data import load_data
    from acmtool.io.checkpoint import read_info
    from acmtool.io.sources import load_original
    from acmtool.train.evaluate_checkpoint import split_options
    info = read_info(checkpoint)
    opts = split_options(info)
    if task.eval_max_samples is not None:
        opts["max_samples"] = task.eval_max_samples
    data = load_data(task.data, load_original(info["source"]), info["source"], **opts)
    return (data.test if task.split == "test" else data.val), data.collate


def held_out_batches(dataset, collate, batch: int, count: int) -> list:
    """`count` consecutive batches of held-out samples as the collate function makes them (text
    right-padded to the longest in its batch): dicts of numpy arrays, or one array."""
    import torch
    n = len(dataset)
    if n < batch:
        raise ValueError(f"{n} held-out samples, fewer than a batch of {batch}")
    out = []
    for i in range(count):
        start = (i * batch) % (n - batch + 1)
        inputs, _ = collate([dataset[j] for j in range(start, start + batch)])
        if isinstance(inputs, dict):
            out.append({k: v.numpy() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        else:
            out.append(inputs.numpy())
    return out


def feeds_for(sess, batch) -> dict:
    """The inputs one session asks for, from a held-out batch."""
    names = [i.name for i in sess.get_inputs()]
    if not isinstance(batch, dict):
        if len(names) != 1:
            raise ValueError(f"the model takes {names}, the data gives one array")
        return {names[0]: batch}
    missing = [n for n in names if n not in batch]
    if missing:
        raise ValueError(f"the model takes {missing}, which the data does not give (it gives {sorted(batch)})")
    return {n: batch[n] for n in names}


def cycling_run(sess, feeds: list) -> Callable[[], None]:
    """One inference per call, on the next of `feeds` each time: models called once per round, as
    time_interleaved calls them, all see the same batch in a round."""
    calls = itertools.count()
    return lambda: sess.run(None, feeds[next(calls) % len(feeds)])


def time_rounds(paths: dict, batches: list, rounds: int, threads: Optional[int]) -> dict:
    """{name: seconds [rounds]}: every round runs each model once on the round's batch, in an
    order that rotates per round (acmtool.runtime.bench), so a slow spell hits all of them alike."""
    from acmtool.runtime.bench import time_interleaved
    from acmtool.runtime.session import session
    sessions = {n: session(p, providers=["CPUExecutionProvider"], threads=threads) for n, p in paths.items()}
    feeds = {n: [feeds_for(s, b) for b in batches] for n, s in sessions.items()}
    runs = {n: cycling_run(s, feeds[n]) for n, s in sessions.items()}
    # the untimed run before each timed one takes the first batch: the cycle stays one batch a round
    primers = {n: (lambda s=s, f=feeds[n][0]: s.run(None, f)) for n, s in sessions.items()}
    return time_interleaved(runs, WARMUP, rounds, primers=primers)


def latency_rows(times: dict) -> dict:
    """{name: latency fields}: each model's time relative to the dense one, round by round."""
    dense = times["dense"]
    return {n: {"latency_vs_dense": float(np.median(t / dense)), "speedup": float(np.median(dense / t)),
                "p50_ms": float(np.median(t) * 1e3), "dense_p50_ms": float(np.median(dense) * 1e3),
                "rounds": len(t)} for n, t in times.items()}


# --- the whole run ---------------------------------------------------------------------------
def task_rows(task: Task, budgets, batches, work: Path, convert: bool, rounds: int, threads: Optional[int],
              log=print) -> list[dict]:
    """Every (batch, method, budget) row of one task, plus the dense row per batch."""
    rows, dense_done, data = [], set(), None
    for budget in budgets:
        ckpts = {m: converted(task, work, m, budget, convert, log) for m in METHODS}
        if not any(ckpts.values()):
            log(f"{task.name} at budget {budget}: no checkpoints in {work} (make them with --convert)")
            continue
        report = evaluated(task, work, budget, ckpts["acm"], ckpts["static"], log)
        acc = accuracy_rows(task, budget, report)
        some = next(p for p in ckpts.values() if p is not None)
        paths = {"dense": dense_onnx(task, work, some), **{m: onnx_of(p) for m, p in ckpts.items() if p}}
        data = data or held_out(task, some)  # every budget's conversion has the same split
        for b in batches:
            lat = latency_rows(time_rounds(paths, held_out_batches(*data, b, rounds), rounds, threads))
            if b not in dense_done:
                dense_done.add(b)
                first = next(iter(acc.values()))
                rows.append({"task": task.name, "batch": b, "method": "dense", "budget": 1.0, "metric": first["metric"],
                             "accuracy": first["original_accuracy"], "eval_samples": first["eval_samples"],
                             **lat["dense"]})
            for m in acc:
                minutes = _read_json(work / f"{ckpts[m].name}.minutes.json") or {}
                rows.append({"task": task.name, "batch": b, "method": m, "budget": budget, **acc[m], **lat[m],
                             "convert_minutes": minutes.get("minutes")})
                log(f"  {task.name} batch {b} {m} {budget}: {acc[m]['metric']} {100 * acc[m]['accuracy']:.2f} % "
                    f"({100 * acc[m]['vs_original']:+.2f} +- {100 * acc[m]['vs_original_se']:.2f} vs original), "
                    f"latency {lat[m]['latency_vs_dense']:.3f} x dense")
    return rows


def _pm(row: dict, key: str) -> str:
    if row.get(key) is None:
        return "-"
    return f"{100 * row[key]:+.2f} +- {100 * row[key + '_se']:.2f}"


def render(rows: list[dict]) -> str:
    order = {"dense": 0, "static": 1, "acm": 2}
    rows = sorted(rows, key=lambda r: (r["task"], r["batch"], -r["budget"], order[r["method"]]))
    return table(["task", "batch", "method", "budget", "achieved", "k=0", "latency / dense", "metric", "accuracy %",
                  "- original (s.e.)", "ACM - static (s.e.)", "cosine"],
                 [[r["task"], str(r["batch"]), r["method"], f"{r['budget']:.3g}",
                   f"{r['achieved_budget']:.3f}" if r.get("achieved_budget") is not None else "-",
                   f"{100 * r['k0_share']:.0f} %" if r.get("k0_share") is not None and r["method"] == "acm" else "-",
                   f"{r['latency_vs_dense']:.3f}", r["metric"], f"{100 * r['accuracy']:.2f}", _pm(r, "vs_original"),
                   _pm(r, "vs_static"), f"{r['mean_cosine']:.4f}" if r.get("mean_cosine") is not None else "-"]
                  for r in rows])


def plot(rows: list[dict], path: Path) -> Optional[Path]:
    """One panel per (task, batch): accuracy against latency / dense, error bars 2 paired s.e. of
    the difference from the original."""
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = sorted({(r["task"], r["batch"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    style = {"acm": ("o-", "ACM (custom op)"), "static": ("s--", "static (plain ONNX)"), "dense": ("*", "dense")}
    for ax, (task, batch) in zip(axes[0], panels):
        for method, (fmt, label) in style.items():
            pts = sorted((r for r in rows if (r["task"], r["batch"], r["method"]) == (task, batch, method)),
                         key=lambda r: r["latency_vs_dense"])
            if not pts:
                continue
            x = [r["latency_vs_dense"] for r in pts]
            y = [100 * r["accuracy"] for r in pts]
            err = [200 * r.get("vs_original_se", 0.0) for r in pts]
            ax.errorbar(x, y, yerr=err, fmt=fmt, capsize=3, label=label, markersize=9 if method == "dense" else 5)
            if method == "acm":
                for r in pts:
                    ax.annotate(f"{r['budget']:g}", (r["latency_vs_dense"], 100 * r["accuracy"]),
                                textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_title(f"{task}, batch {batch}")
        ax.set_xlabel("latency / dense (ONNX Runtime CPU)")
        ax.set_ylabel(f"{pts[0]['metric'] if pts else 'accuracy'} %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def publish(rows: list[dict], stem: Path, extra: dict) -> str:
    """Print the table, write its JSON, CSV and PNG; returns the README block."""
    from benchmarks import readme
    from benchmarks.__main__ import with_ext, write
    text = render(rows)
    print(text)
    write(rows, stem, extra)
    png = plot(rows, with_ext(stem, ".png"))
    print(f"wrote {png}")
    return readme.indented(text) + readme.image(png, alt="accuracy against latency")


def run(tasks, budgets=BUDGETS, batches=BATCHES, work: Path = WORK, convert: bool = False, rounds: int = 30,
        threads: Optional[int] = None, log=print) -> list[dict]:
    rows = []
    for task in tasks:
        rows += task_rows(task, budgets, batches, Path(work), convert, rounds, threads, log)
    return rows


def main(argv=None) -> list[dict]:
    import os
    from benchmarks.__main__ import RESULTS
    from benchmarks.machine import tag
    p = argparse.ArgumentParser(prog="python -m benchmarks.pareto_latency", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=sorted(TASKS))
    p.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS))
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--convert", action="store_true", help="convert what is missing (slow: tens of minutes each)")
    p.add_argument("--work", type=Path, default=WORK, help="where the checkpoints and ONNX models are kept")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--readme", action="store_true", help="also rewrite the README's latency-pareto table")
    p.add_argument("--learners", type=int, default=None,
                   help="N learners per ACM instead of the task's (rows named TASK-lN)")
    a = p.parse_args(argv)
    tasks = [TASKS[t] if a.learners is None else with_learners(TASKS[t], a.learners) for t in a.tasks]
    rows = run(tasks, a.budgets, a.batches, a.work, a.convert, a.rounds, a.threads)
    if not rows:
        print(f"no checkpoints in {a.work}: run with --convert")
        return rows
    block = publish(rows, a.out / f"pareto-latency-{tag()}", {"threads": a.threads, "rounds": a.rounds})
    if a.readme:
        from benchmarks import readme
        readme.update({"latency-pareto": block})
    return rows


if __name__ == "__main__":
    main()
