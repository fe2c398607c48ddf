"""acmtool bench model.onnx [--baseline dense.onnx]: latency percentiles, throughput, speed-up."""
from __future__ import annotations

import json

import click

from acmtool.cli.main import cli
from acmtool.errors import AcmInputError


@cli.command("bench")
@click.argument("onnx_model", type=click.Path(dir_okay=False))
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="Another .onnx model (the dense one) measured side by side, interleaved run by run.")
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Size of a dynamic batch axis [default: 1].")
@click.option("--seq", type=click.IntRange(min=1), default=128, show_default=True,
              help="Size of every other dynamic axis (sequence length).")
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Untimed runs first.")
@click.option("--iters", type=click.IntRange(min=1), default=100, show_default=True, help="Timed runs (rounds).")
@click.option("--max-seconds", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time box: fewer rounds (at least 10) where --iters would take longer.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="ONNX Runtime intra-op threads [default: ONNX Runtime's choice].")
@click.option("--provider", default="CPUExecutionProvider", show_default=True,
              help="Execution provider; refused unless ONNX Runtime really runs on it. CUDA binds inputs and "
                   "outputs on the device.")
@click.option("--profile", "profile_runs", type=click.IntRange(min=0), default=0, show_default=True,
              help="After timing, profile this many runs of each model with ONNX Runtime's profiler: time per node "
                   "type and per role (DynamicLearners, the ACMs' gates, the rest).")
@click.option("--budgets", default=None, metavar="B1,B2,...",
              help="A model with a budget input (the run-time knob): also time it at each of these budgets.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write JSON here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="With --budgets: also draw latency and throughput against the budget (PNG).")
@click.option("--force", is_flag=True, help="Replace an existing --json or --plot file.")
def bench_cmd(onnx_model, baseline, batch, seq, warmup, iters, max_seconds, threads, provider, profile_runs, budgets,
              json_path, plot_path, force):
    """Time ONNX_MODEL in ONNX Runtime on random inputs that fit it: p50/p90/p99 latency and
    samples per second; with --baseline, both side by side and the speed-up (median over rounds
    of baseline time / model time)."""
    from acmtool.cli.eval_cmd import parse_budgets
    from acmtool.io.atomic import atomic_path
    from acmtool.io.outputs import refuse_existing
    from acmtool.runtime.bench import BenchConfig, bench, render
    if plot_path and not budgets:
        raise AcmInputError("--plot draws the --budgets curve: give --budgets too")
    refuse_existing([p for p in (json_path, plot_path) if p], force)
    cfg = BenchConfig(batch=batch, seq=seq, warmup=warmup, iters=iters, threads=threads, provider=provider,
                      max_seconds=max_seconds, profile_runs=profile_runs, budgets=parse_budgets(budgets))
    report = bench(onnx_model, cfg, baseline=baseline)
    click.echo(render(report))
    if json_path:
        with atomic_path(json_path, suffix=".json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        click.echo(f"wrote {json_path}")
    if plot_path:
        from acmtool.cli.curve_plot import plot_latency_curve
        click.echo(f"wrote {plot_latency_curve(report, plot_path)}")
