"""Dense MLP vs the grouped and naive DynamicLearners paths in PyTorch, side by side.

    python -m benchmarks.torch_paths [--tokens 8x197] [--repeats R] [--warmup W] [--threads T] [--json FILE]

A ViT-B sized MLP (768 -> 3072 -> 768, GELU, fp32) split into N = 4 learners of width 768.
For each budget, K is drawn per token from Binomial(N, budget) (fixed seed) so that
mean(K)/N ~ budget; at budget 1.0 every K = N and the grouped path does the dense MLP's work.
The three candidates run interleaved within each repeat, so that drift in the machine's speed
(other jobs, frequency scaling) hits all of them alike; the table reports medians over repeats.
Absolute times are noisy on a shared machine: read the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from acmtool.ops.dynamic_learners import dynamic_learners_grouped, dynamic_learners_reference

DIN, HIDDEN, DOUT, N = 768, 3072, 768, 4
ACTIVATION = "gelu"
BUDGETS = (0.25, 0.5, 1.0)
SEED = 0


def make_weights(gen: torch.Generator):
    """Learner weights in the operator's layout, plus the same weights as one dense nn.Linear pair."""
    h = HIDDEN // N
    # nn.Linear's default init scale, so that outputs are O(1) and a 1e-5 tolerance is meaningful.
    w1 = (torch.rand(N, DIN, h, generator=gen) * 2 - 1) / DIN ** 0.5
    b1 = (torch.rand(N, h, generator=gen) * 2 - 1) / DIN ** 0.5
    w2 = (torch.rand(N, h, DOUT, generator=gen) * 2 - 1) / HIDDEN ** 0.5
    b2 = (torch.rand(DOUT, generator=gen) * 2 - 1) / HIDDEN ** 0.5
    # Dense: hidden neurons of learner i are columns [i*h, (i+1)*h). F.linear wants [out, in],
    # made contiguous so that the dense baseline uses the layout a real nn.Linear has.
    fc1_w = w1.permute(1, 0, 2).reshape(DIN, HIDDEN).t().contiguous()
    fc1_b = b1.reshape(HIDDEN)
    fc2_w = w2.reshape(HIDDEN, DOUT).t().contiguous()
    return (w1, b1, w2, b2), (fc1_w, fc1_b, fc2_w, b2)


def draw_k(shape, budget: float, gen: torch.Generator) -> torch.Tensor:
    """K ~ Binomial(N, budget) per token, so E[K]/N = budget and every bucket 0..N occurs."""
    if budget >= 1.0:
        return torch.full(shape, N, dtype=torch.int64)
    probs = torch.full(shape, float(budget))
    return torch.binomial(torch.full(shape, float(N)), probs, generator=gen).to(torch.int64)


def time_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def run(tokens: tuple[int, ...], repeats: int, warmup: int) -> list[dict]:
    gen = torch.Generator().manual_seed(SEED)
    (w1, b1, w2, b2), (fc1_w, fc1_b, fc2_w, fc2_b) = make_weights(gen)
    x = torch.randn(*tokens, DIN, generator=gen)

    # Sanity: dense == grouped at K = N (the ACM's exactness claim) holds for these weights.
    full = torch.full(tokens, N, dtype=torch.int64)
    dense_out = F.linear(F.gelu(F.linear(x, fc1_w, fc1_b)), fc2_w, fc2_b)
    grouped_full = dynamic_learners_grouped(x, full, w1, b1, w2, b2, ACTIVATION)
    assert (dense_out - grouped_full).abs().max().item() <= 1e-4, "dense and K = N grouped disagree"

    rows = []
    for budget in BUDGETS:
        k = draw_k(tokens, budget, gen)
        candidates = {
            "dense": lambda: F.linear(F.gelu(F.linear(x, fc1_w, fc1_b)), fc2_w, fc2_b),
            "grouped": lambda: dynamic_learners_grouped(x, k, w1, b1, w2, b2, ACTIVATION),
            "naive": lambda: dynamic_learners_reference(x, k, w1, b1, w2, b2, ACTIVATION),
        }
        diff = (candidates["grouped"]() - candidates["naive"]()).abs().max().item()
        assert diff <= 1e-5, f"grouped and naive differ by {diff:.3g} at budget {budget}"

        for _ in range(warmup):
            for fn in candidates.values():
                fn()
        times = {name: [] for name in candidates}
        names = list(candidates)
        for r in range(repeats):
            # Rotate the order each repeat so no candidate always runs first (cold caches) or last.
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(time_ms(candidates[name]))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        # Speed-ups are medians of per-repeat ratios: the three timings of one repeat ran a few
        # hundred ms apart, so a slow spell on the machine mostly cancels within each ratio.
        vs_dense = statistics.median(d / g for d, g in zip(times["dense"], times["grouped"]))
        vs_naive = statistics.median(n / g for n, g in zip(times["naive"], times["grouped"]))
        rows.append({
            "budget": budget,
            "mean_k_over_n": k.double().mean().item() / N,
            "max_abs_diff_grouped_vs_naive": diff,
            "dense_ms": med["dense"],
            "grouped_ms": med["grouped"],
            "naive_ms": med["naive"],
            "grouped_speedup_vs_dense": vs_dense,
            "grouped_speedup_vs_naive": vs_naive,
            "times_ms": times,
        })
    return rows


def print_table(rows: list[dict]) -> None:
    header = (f"{'budget':>6} {'mean K/N':>8} {'dense ms':>9} {'grouped ms':>10} {'naive ms':>9} "
              f"{'vs dense':>8} {'vs naive':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['budget']:>6.2f} {r['mean_k_over_n']:>8.3f} {r['dense_ms']:>9.2f} {r['grouped_ms']:>10.2f} "
              f"{r['naive_ms']:>9.2f} {r['grouped_speedup_vs_dense']:>7.2f}x {r['grouped_speedup_vs_naive']:>7.2f}x")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", default="8x197", help="token grid, e.g. 8x197 (batch x sequence)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: the cores this process may use)")
    parser.add_argument("--json", metavar="FILE", help="also write machine info and rows here")
    args = parser.parse_args(argv)
    tokens = tuple(int(v) for v in args.tokens.lower().split("x"))

    # The cores this process may use (affinity), which torch's default thread count can ignore.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(args.threads or cores)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        # With every core in torch's pool, a busy neighbour stalls each parallel region for a
        # scheduler slice; the grouped path has ~5x more ops (regions) than dense and suffers most.
        print(f"warning: 1-minute load average is {load:.2f} on {cores} cores; times may be noisy "
              f"and the grouped path the most hurt (compare with --threads 1)")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; MLP {DIN}->{HIDDEN}->{DOUT}, "
          f"N={N}, {ACTIVATION}, fp32, tokens {'x'.join(map(str, tokens))}; "
          f"median of {args.repeats} interleaved repeats")
    with torch.inference_mode():
        rows = run(tokens, args.repeats, args.warmup)
    print_table(rows)
    print("vs dense = dense / grouped time, vs naive = naive / grouped time (medians of per-repeat ratios)")

    if args.json:
        report = {"machine": {"cores": cores, "threads": torch.get_num_threads(), "torch": torch.__version__,
                              "load_avg_1min_at_start": load},
                  "config": {"din": DIN, "hidden": HIDDEN, "dout": DOUT, "n": N, "activation": ACTIVATION,
                             "dtype": "float32", "tokens": list(tokens), "repeats": args.repeats,
                             "warmup": args.warmup, "seed": SEED},
                  "rows": rows}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
