"""`--plot PNG` of `acmtool eval --budgets` and `acmtool bench --budgets`: one model across the
budgets of its knob, as a picture (matplotlib; a clear error without it)."""
from __future__ import annotations

from pathlib import Path

from acmtool.errors import AcmInputError
from acmtool.io.atomic import atomic_path


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise AcmInputError("--plot needs matplotlib: pip install matplotlib (or acmtool[plot])") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path


def plot_accuracy_curve(report: dict, path) -> Path:
    """The task figure against the budget asked (error bars: 2 paired s.e. of the difference from
    the original), and the achieved budget against the asked one."""
    from acmtool.cli.eval_cmd import DIFFERENCES
    plt = _pyplot()
    rows = sorted(report["budget_curve"], key=lambda r: r["budget"])
    key = next((k for k in ("accuracy", "dropin_probe") if k in (rows[0].get("vs_original") or {})), None)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = [r["budget"] for r in rows]
    if key is not None:
        left.errorbar(xs, [100 * r["vs_original"][key]["diff"] for r in rows],
                      yerr=[200 * r["vs_original"][key]["se"] for r in rows], fmt="o-", capsize=3)
        left.axhline(0.0, color="gray", ls=":")
        left.set_ylabel(f"{DIFFERENCES[key]} - original (points)")
    elif "mean_cosine" in rows[0]:
        left.plot(xs, [r["mean_cosine"] for r in rows], "o-")
        left.set_ylabel("mean cosine to the original")
    left.set_xlabel("budget asked")
    left.grid(alpha=0.3)
    right.plot(xs, [r["achieved_budget"] for r in rows], "o-", label="achieved")
    right.plot(xs, xs, ":", color="gray", label="asked")
    right.set_xlabel("budget asked")
    right.set_ylabel("achieved budget")
    right.legend(fontsize=7)
    right.grid(alpha=0.3)
    fig.suptitle(Path(report.get("checkpoint", "")).name, fontsize=9)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_latency_curve(report: dict, path) -> Path:
    """p50 latency and throughput against the budget (the baseline's p50 as a line, if timed)."""
    plt = _pyplot()
    rows = sorted(report["budgets"], key=lambda r: r["budget"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    xs = [r["budget"] for r in rows]
    left.plot(xs, [r["p50_ms"] for r in rows], "o-", label="model, p50")
    left.plot(xs, [r["p90_ms"] for r in rows], "o--", label="model, p90")
    base = (report.get("baseline") or {}).get("p50_ms")
    if base is not None:
        left.axhline(base, color="gray", ls=":", label="baseline, p50")
    left.set_xlabel("budget")
    left.set_ylabel("latency (ms)")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    right.plot(xs, [r["samples_per_s"] for r in rows], "o-")
    right.set_xlabel("budget")
    right.set_ylabel("samples / s")
    right.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
