"""Accuracy against compute from the latest accuracy_fashion / accuracy_minilm results (not rerun here).

Points: (whole-model FLOPs ratio, accuracy) for ACM, static and dense (ratio 1). Fashion-MNIST:
test accuracy of the demo ViT; MiniLM: frozen-probe topic accuracy on fortunes.
"""
from __future__ import annotations

import json
from pathlib import Path

from acmtool.cli.format import table


def _latest(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)


def _read(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:  # a file being written by a running benchmark
        print(f"skipped {path.name}: {e}")
        return None


def collect(folder: Path) -> list[dict]:
    """One point per (task, method, budget); newest file wins for a repeated (task, method, budget)."""
    points: dict = {}
    for path in _latest(folder, "accuracy-fashion-vit-*.json"):
        for r in (_read(path) or {}).get("rows", []):
            src = path.name
            points[("fashion-vit", "dense", 1.0)] = {"task": "fashion-vit", "method": "dense", "budget": 1.0,
                                                    "flops_ratio": 1.0, "accuracy": r["dense_acc"], "source": src}
            for m in ("acm", "static"):
                points[("fashion-vit", m, r["budget"])] = {
                    "task": "fashion-vit", "method": m, "budget": r["budget"], "achieved_budget": r[f"{m}_budget"],
                    "flops_ratio": r[f"{m}_flops"], "accuracy": r[f"{m}_acc"], "source": src}
            if "diff_sigma" in r:  # the paired standard error on the same test images (benchmarks.paired)
                points[("fashion-vit", "acm", r["budget"])]["vs_static"] = (r["acm_acc"] - r["static_acc"],
                                                                           r["diff_sigma"])
    for path in _latest(folder, "accuracy-minilm-*.json"):
        d = _read(path)
        if d is None:
            continue
        v = d["report"]["validation"]
        method = "static" if d["args"].get("static") else "acm"
        b = d["args"]["budget"]
        points[("minilm-fortunes", "dense", 1.0)] = {"task": "minilm-fortunes", "method": "dense", "budget": 1.0,
                                                    "flops_ratio": 1.0, "accuracy": v["teacher_probe_accuracy"],
                                                    "source": path.name}
        points[("minilm-fortunes", method, b)] = {
            "task": "minilm-fortunes", "method": method, "budget": b, "achieved_budget": v["achieved_budget"],
            "flops_ratio": v["flops"]["ratio"], "accuracy": v["student_probe_accuracy"], "source": path.name}
    return sorted(points.values(), key=lambda p: (p["task"], p["method"], p["flops_ratio"]))


def _vs_static(p: dict) -> str:
    if "vs_static" not in p:
        return "-"
    diff, sigma = p["vs_static"]
    return f"{100 * diff:+.2f} +- {100 * sigma:.2f}"


def render(points: list[dict]) -> str:
    return table(["task", "method", "budget", "achieved", "FLOPs ratio", "accuracy %", "ACM - static (s.e.)", "from"],
                 [[p["task"], p["method"], f"{p['budget']:.2f}", f"{p['achieved_budget']:.3f}"
                   if "achieved_budget" in p else "-", f"{p['flops_ratio']:.3f}", f"{100 * p['accuracy']:.2f}",
                   _vs_static(p), p["source"]] for p in points])


def plot(points: list[dict], path: Path) -> Path | None:
    if not points:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    tasks = sorted({p["task"] for p in points})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    style = {"acm": ("o-", "ACM"), "static": ("s--", "static"), "dense": ("*", "dense")}
    for ax, task in zip(axes[0], tasks):
        for method, (fmt, label) in style.items():
            pts = sorted((p["flops_ratio"], 100 * p["accuracy"]) for p in points
                         if p["task"] == task and p["method"] == method)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, fmt, label=label, markersize=10 if method == "dense" else 6)
        ax.set_title(task)
        ax.set_xlabel("whole-model FLOPs / original")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
