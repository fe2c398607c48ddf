"""One entry point for acmtool's benchmarks.

    python -m benchmarks run [--quick] [--accuracy] [--skip-ops] [--skip-models] [--budgets B ...] [--threads T]
                             [--out DIR] [--work DIR] [--verify-only]

1. operator level (benchmarks.ops): DynamicLearners vs the dense MLP and the standard-ops graph in
   ONNX Runtime, and PyTorch grouped/naive vs dense, over budgets and token counts; CPU, and CUDA
   where torch and ONNX Runtime both have it (else the reason is printed).
2. model level (benchmarks.models): dense ONNX vs ACM ONNX end-to-end in ONNX Runtime, p50/p90/p99
   and throughput, next to the whole-model FLOPs ratio.
3. accuracy against compute (benchmarks.pareto): from the latest accuracy_fashion / accuracy_minilm
   JSON in the results folder (--accuracy reruns accuracy_fashion first); a table and a PNG.
4. accuracy against measured latency (benchmarks.pareto_latency): dense, static (plain ONNX) and
   ACM (custom op) on real held-out batches at batch 1 and 8, with paired standard errors, from the
   checkpoints in --work (converted first only with --accuracy); a table and a PNG.

JSON and CSV per part go to benchmarks/results/ with the machine's tag in the name. A full run
into benchmarks/results/ also rewrites the README's tables between its `benchmarks:` markers
(--no-readme leaves them); a --quick run only prints. Speed results never change the exit status;
only an error does.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from acmtool.runtime.bench import MIN_ROUNDS
from benchmarks import readme
from benchmarks.machine import setup, tag

RESULTS = Path(__file__).parent / "results"
ACCURACY_BUDGETS = (0.25, 0.5, 0.75)
MODEL_SECONDS = 40.0  # the time box of one dense-vs-ACM comparison in a full run


def with_ext(stem: Path, ext: str) -> Path:
    """stem + ext (Path.with_suffix would eat the tag's last version number, as in ort1.32.0)."""
    return stem.parent / (stem.name + ext)


def write(rows: list[dict], stem: Path, extra: dict) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    with_ext(stem, ".json").write_text(json.dumps({"setup": setup(), **extra, "rows": rows}, indent=2))
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(with_ext(stem, ".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()} for r in rows)
    print(f"wrote {stem}.json and .csv")


def run_ops(a, suffix: str) -> dict:
    from benchmarks import ops
    budgets = ops.QUICK_BUDGETS if a.quick else ops.BUDGETS
    tokens = ops.QUICK_TOKENS if a.quick else ops.TOKENS
    rounds = 5 if a.quick else 20
    print(f"\n== operator level: MLP 768->3072->768, N=4, gelu, fp32; batch 1 x tokens; {a.threads} threads; "
          f"medians of {rounds} interleaved rounds ==")
    ort_rows = ops.ort_rows(budgets, tokens, rounds, a.threads)
    torch_rows = ops.torch_rows(budgets, tokens, rounds)
    reason = ops.cuda_reason()
    if reason is None:
        ort_rows += ops.ort_rows(budgets, tokens, rounds, a.threads, provider="CUDAExecutionProvider")
        torch_rows += ops.torch_rows(budgets, tokens, rounds, device="cuda")
    else:
        print(f"CUDA operator benchmarks skipped: {reason}")
    print("\nONNX Runtime (vs dense / vs standard: that time / DynamicLearners' time, median of per-round ratios):")
    print(ops.render_ort(ort_rows))
    print("\nPyTorch (vs dense / vs naive: that time / grouped time):")
    print(ops.render_torch(torch_rows))
    write(ort_rows, a.out / f"bench-ops-ort-{tag()}-t{a.threads}{suffix}", {"quick": a.quick, "threads": a.threads})
    write(torch_rows, a.out / f"bench-ops-torch-{tag()}-t{a.threads}{suffix}", {"quick": a.quick})
    return {"summary": readme.indented(readme.summary(ort_rows, torch_rows)),
            "ops-ort": readme.indented(ops.render_ort(ort_rows)), "ops-torch": readme.indented(ops.render_torch(torch_rows))}


def model_grid(a) -> tuple:
    """(models, budgets, targets, the result files' budgets tag) of the model level."""
    from benchmarks import models
    names = models.QUICK_MODELS if a.quick else models.MODELS
    budgets = a.budgets or ((0.5,) if a.quick else (0.25, 0.5, 0.75))
    only = "-b" + "-".join(f"{b:g}" for b in a.budgets) if a.budgets else ""
    return names, budgets, ("mlp",) if a.quick else ("mlp", "mlp+attn"), only


def run_models(a, suffix: str) -> dict:
    from benchmarks import models
    names, budgets, targets, only = model_grid(a)
    batches = (1, 8)
    # a full run time-boxes each comparison (ViT-B at batch 8 takes seconds a round on 2 cores)
    warmup, iters, seconds = (1, 5, None) if a.quick else (3, 50, MODEL_SECONDS)
    box = f" (fewer where {iters} would take over {seconds:.0f} s, at least {MIN_ROUNDS})" if seconds else ""
    print(f"\n== model level: ONNX Runtime CPU, {a.threads} threads, {warmup} warm-up + {iters} interleaved rounds"
          f"{box}; random weights (MiniLM: real), gates calibrated to the budget on random inputs ==")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows += models.model_rows(name, budgets, batches, targets, Path(tmp), warmup, iters, a.threads,
                                      max_seconds=seconds)
    print("\nspeed-up: median over rounds of dense time / ACM time; ideal: 1 / whole-model FLOPs ratio")
    print(models.render(rows))
    print(f"\nwhere the time goes (ONNX Runtime's profiler, {models.PROFILE_RUNS} runs; node kernel times in ms per run)")
    print(models.render_profile(rows))
    write(rows, a.out / f"bench-models{only}-{tag()}-t{a.threads}{suffix}", {"quick": a.quick, "threads": a.threads})
    return {"models": readme.indented(models.render(rows)),
            "models-profile": readme.indented(models.render_profile(rows))}


def run_verify(a, suffix: str) -> None:
    """The model level's ACM models checked against PyTorch (acmtool verify), without the timing."""
    from benchmarks import models
    names, budgets, targets, only = model_grid(a)
    print("\n== model level, verify only: ONNX Runtime against PyTorch on a random batch of 2 ==")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows += models.verify_rows(name, budgets, targets, Path(tmp))
    write(rows, a.out / f"verify-models{only}-{tag()}{suffix}", {"quick": a.quick})
    print(f"verify: {sum(r['verify_passed'] for r in rows)} of {len(rows)} models passed")


def run_accuracy(a) -> dict:
    from benchmarks import pareto
    if a.accuracy:
        # MiniLM is converted by the latency part (benchmarks.pareto_latency), at more budgets
        from benchmarks import accuracy_fashion
        accuracy_fashion.main(["--out", str(a.out), "--budgets", *map(str, ACCURACY_BUDGETS)])
    points = pareto.collect(a.out)
    print("\n== accuracy against compute (latest accuracy_fashion / accuracy_minilm results) ==")
    if not points:
        print(f"no accuracy results in {a.out}; run python -m benchmarks run --accuracy (or the accuracy_* scripts)")
        return {}
    print(pareto.render(points))
    stem = a.out / f"accuracy-pareto-{tag()}"
    write(points, stem, {})
    png = pareto.plot(points, with_ext(stem, ".png"))
    print(f"wrote {png}")
    return {"accuracy": readme.indented(pareto.render(points)) + readme.image(png)}


def run_latency_pareto(a) -> dict:
    from benchmarks import pareto_latency as pl
    a.work = a.work or pl.WORK
    print(f"\n== accuracy against measured latency (checkpoints in {a.work}"
          f"{'; missing ones converted now' if a.accuracy else ''}) ==")
    rows = pl.run(list(pl.TASKS.values()), work=a.work, convert=a.accuracy, rounds=5 if a.quick else 30,
                  threads=a.threads)
    if not rows:
        print(f"no checkpoints in {a.work}; python -m benchmarks.pareto_latency --convert makes them "
              f"(tens of minutes each on 2 cores)")
        return {}
    stem = a.out / f"pareto-latency-{tag()}{'-quick' if a.quick else ''}"
    return {"latency-pareto": pl.publish(rows, stem, {"threads": a.threads, "quick": a.quick})}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="acmtool benchmarks")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="operator level, model level, accuracy vs compute")
    r.add_argument("--quick", action="store_true", help="few sizes and iterations (CI; minutes on 2 cores)")
    r.add_argument("--accuracy", action="store_true", help="rerun accuracy_fashion and accuracy_minilm first (slow)")
    r.add_argument("--skip-ops", action="store_true")
    r.add_argument("--skip-models", action="store_true")
    r.add_argument("--threads", type=int, default=os.cpu_count())
    r.add_argument("--out", type=Path, default=RESULTS)
    r.add_argument("--work", type=Path, default=None,
                   help="checkpoints of the accuracy-vs-latency part (default ~/.cache/acmtool/pareto)")
    r.add_argument("--no-readme", action="store_true", help="leave README.md's tables as they are")
    r.add_argument("--verify-only", action="store_true",
                   help="only check the model level's ACM models against PyTorch (acmtool verify); no timing")
    r.add_argument("--budgets", type=float, nargs="+", default=None,
                   help="the model level at these budgets only (its own result file; the README is left as it is)")
    a = p.parse_args(argv)
    if a.budgets and not all(0 < b <= 1 for b in a.budgets):
        p.error(f"--budgets must be in (0, 1]; got {' '.join(map(str, a.budgets))}")
    started = time.time()
    suffix = "-quick" if a.quick else ""
    print(f"setup: {setup()}")
    if a.verify_only:
        run_verify(a, suffix)
        return 0
    blocks = {}
    if not a.skip_ops:
        blocks |= run_ops(a, suffix)
    if not a.skip_models:
        blocks |= run_models(a, suffix)
    speed_minutes = (time.time() - started) / 60
    blocks |= run_accuracy(a)
    blocks |= run_latency_pareto(a)
    print(f"\nbenchmarks done in {(time.time() - started) / 60:.1f} min")
    # the README shows full runs into the repository's results only: a --quick run (CI) or one
    # written elsewhere prints its tables and leaves the README alone
    if not a.quick and not a.no_readme and not a.budgets and a.out.resolve() == RESULTS.resolve():
        if not a.skip_ops and not a.skip_models:  # the setup line speaks for both speed parts
            blocks["setup"] = readme.setup_line(setup(), a.threads, speed_minutes)
        done = readme.update(blocks)
        print(f"README.md: updated {', '.join(done)}" if done else "README.md: no benchmark blocks to update")
    return 0


if __name__ == "__main__":
    sys.exit(main())
