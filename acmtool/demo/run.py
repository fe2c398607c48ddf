"""acmtool demo: train (or reuse) the dense Fashion-MNIST ViT, convert it at budget 0.5 with
gates and as the static baseline, and compare dense, ACM and static on the test set; then deploy:
ONNX exports, verify, the ACM model in ONNX Runtime with the custom op, its speed against the
dense ONNX model, and a per-token compute map (acmtool.demo.deploy)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from acmtool.cli.format import table
from acmtool.demo.dense_vit import MODEL, MODEL_ARGS, trained_weights
from acmtool.demo.deploy import deploy
from acmtool.io.atomic import atomic_path
from acmtool.train.evaluate_checkpoint import evaluate_checkpoint
from acmtool.train.options import ConvertOptions
from acmtool.train.pipeline import convert, run_folder

BUDGET = 0.5
PHASES = {"distill_epochs": 0.5, "gate_epochs": 0.25, "finetune_epochs": 1.0, "batch_size": 64}


def convert_and_eval(folder: Path, weights: Path, budget: float, static: bool, log=print, seed: int = 0,
                     **options) -> dict:
    """One conversion of the dense Fashion-MNIST ViT, evaluated on the test set; seed: the
    conversion's (split, order, initial gates), the dense model stays the same; options: more
    ConvertOptions fields (labels, targets) for the benchmarks' variants."""
    name = "static" if static else "acm"
    out = folder / f"fashion-vit-{name}-{budget}.acm.safetensors"
    flags = "".join(f" --{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in options.items()
                    if v is not False)
    log(f"\n== acmtool convert {MODEL} --weights {weights} --budget {budget} --data fashion-mnist"
        f"{' --static' if static else ''}{flags} -o {out}")
    # the demo's folder is its own: a rerun replaces what the last one wrote there
    convert(ConvertOptions(model=MODEL, weights=str(weights), model_args=MODEL_ARGS, budget=budget,
                           data="fashion-mnist", output=str(out), static=static,
                           resume=run_folder(out).exists(), seed=seed, force=True, **{**PHASES, **options}))
    log(f"== acmtool eval {out} --data fashion-mnist --split test")
    return evaluate_checkpoint(out, "fashion-mnist", split="test")


def comparison_rows(results: dict) -> list:
    """[model, accuracy %, budget, FLOPs vs dense] for dense and each result."""
    first = next(iter(results.values()))
    rows = [["dense", f"{100 * first['teacher_accuracy']:.2f}", "1.000", "1.000"]]
    for name, r in results.items():
        rows.append([name, f"{100 * r['student_accuracy']:.2f}", f"{r['achieved_budget']:.3f}",
                     f"{r['flops']['ratio']:.3f}"])
    return rows


def run_demo(folder: Path, budget: float = BUDGET, log=print) -> dict:
    started = time.time()
    weights = trained_weights(log)
    results = {name: convert_and_eval(folder, weights, budget, static, log)
               for name, static in (("acm", False), ("static", True))}
    log(f"\nFashion-MNIST test set (10k images), budget {budget}:")
    log(table(["model", "accuracy %", "budget", "FLOPs vs dense"], comparison_rows(results)))
    deployed = deploy(folder, Path(results["acm"]["checkpoint"]), weights, results["acm"].get("student_accuracy"),
                      log)
    summary = {"budget": budget, "results": results, "deploy": deployed, "wall_time_s": time.time() - started}
    with atomic_path(folder / "demo.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    log(f"\nall files in {folder}; {summary['wall_time_s']:.0f} s")
    return summary
