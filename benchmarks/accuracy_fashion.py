"""The demo's Fashion-MNIST ViT at several budgets: ACM against the static baseline and dense.

    python -m benchmarks.accuracy_fashion [--budgets 0.25 0.5 0.75] [--seed N] [--labels] [--targets mlp+attn]

Test-set accuracy (10k images) of each, the achieved budget and the whole-model FLOPs ratio, and
ACM - static with its paired standard error (benchmarks.paired); a table, JSON and CSV in
benchmarks/results/. The defaults are the demo's conversions (the README's table); a variant (another
seed, --labels, --targets) goes to files of its own, accuracy-<variant>-fashion-vit-*.
"""
from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

from acmtool.cli.format import table
from acmtool.demo.dense_vit import trained_weights
from acmtool.demo.run import convert_and_eval
from benchmarks.machine import setup, tag
from benchmarks.paired import correct, paired_difference

RESULTS = Path(__file__).parent / "results"


def write(stem: Path, rows: list) -> None:
    # not with_suffix: the tag ends in a version number ("ort1.32.0") that it would cut
    Path(f"{stem}.json").write_text(json.dumps({"setup": setup(), "rows": rows}, indent=2))
    with open(f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def variant(a) -> str:
    """The file name's variant part: "" for the demo's conversions, else e.g. "seed1-labels-attn-"."""
    parts = ([f"seed{a.seed}"] if a.seed else []) + (["labels"] if a.labels else []) + \
        (["attn"] if a.targets == "mlp+attn" else [])
    return "".join(f"{part}-" for part in parts)


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--seed", type=int, default=0,
                   help="the conversions' seed (same dense model): another seed measures the run-to-run spread; "
                        "its files are named accuracy-seedN-... so that the README keeps seed 0's")
    p.add_argument("--labels", action="store_true", help="convert with --labels (cross-entropy on top of distillation)")
    p.add_argument("--targets", choices=["mlp", "mlp+attn"], default="mlp", help="convert with --targets")
    a = p.parse_args(argv)
    weights = trained_weights()
    a.out.mkdir(parents=True, exist_ok=True)
    stem = a.out / f"accuracy-{variant(a)}fashion-vit-{tag()}"
    options = {"labels": a.labels, "targets": a.targets}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in a.budgets:
            acm = convert_and_eval(Path(tmp), weights, b, static=False, seed=a.seed, **options)
            static = convert_and_eval(Path(tmp), weights, b, static=True, seed=a.seed, **options)
            rows.append({"budget": b, "dense_acc": acm["teacher_accuracy"], "acm_acc": acm["student_accuracy"],
                         "acm_budget": acm["achieved_budget"], "acm_flops": acm["flops"]["ratio"],
                         "static_acc": static["student_accuracy"], "static_budget": static["achieved_budget"],
                         "static_flops": static["flops"]["ratio"],
                         # where the gates put the compute: mean k of each ACM, in the model's order
                         "acm_mean_k": "/".join(f"{layer['mean_k']:.2f}" for layer in acm["per_layer"].values())})
            paired = paired_difference(correct(acm["checkpoint"], "fashion-mnist"),
                                       correct(static["checkpoint"], "fashion-mnist"))
            rows[-1].update(diff_sigma=paired["sigma"], acm_only=paired["a_only"], static_only=paired["b_only"])
            write(stem, rows)  # after every budget: a long run interrupted keeps what it measured
    print("\nFashion-MNIST ViT, test accuracy (%) against compute:")
    print(table(["budget", "dense", "ACM", "static", "ACM - static (paired s.e.)", "ACM budget", "ACM FLOPs",
                 "static FLOPs"],
                [[f"{r['budget']:.2f}", f"{100 * r['dense_acc']:.2f}", f"{100 * r['acm_acc']:.2f}",
                  f"{100 * r['static_acc']:.2f}",
                  f"{100 * (r['acm_acc'] - r['static_acc']):+.2f} +- {100 * r['diff_sigma']:.2f}",
                  f"{r['acm_budget']:.3f}", f"{r['acm_flops']:.3f}", f"{r['static_flops']:.3f}"] for r in rows]))
    for r in rows:
        print(f"ACM's mean k per layer at {r['budget']:.2f}: {r['acm_mean_k']}")
    print(f"wrote {stem}.json and .csv")
    return rows


if __name__ == "__main__":
    main()
