"""Operator level: the ViT-B MLP (768 -> 3072 -> 768, N = 4, GELU, fp32) over budgets and token counts.

ONNX Runtime (CPU; CUDA where the provider and the library's CUDA kernel are present): the dense
MLP graph, one ai.acmtool::DynamicLearners node, and the standard-ops graph (op_cpu's models).
The op is also timed against itself at K = N on the same tokens: dense ORT is slower than the op's
own GEMM on CPU, so "vs dense" alone flatters it; "of ideal" is (time at K = N / time) * mean K/N,
1.0 when the time falls in proportion to the learners run.
PyTorch: dense vs the grouped and naive DynamicLearners paths (torch_paths' weights and K).
Times are medians over interleaved rounds; speed-ups are medians of per-round ratios.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from acmtool.cli.format import table
from acmtool.runtime.bench import time_interleaved
from benchmarks import op_cpu, torch_paths

BUDGETS = (0.125, 0.25, 0.5, 0.75, 1.0)
TOKENS = (1, 8, 64, 197, 1576, 4096)  # one token, a short text, a ViT image (197), 8 of them
QUICK_BUDGETS = (0.25, 0.5, 1.0)
QUICK_TOKENS = (64, 1576)


def _ratio(times: dict, num: str, den: str) -> float:
    return float(np.median(times[num] / times[den]))


def ort_rows(budgets, tokens, rounds: int, threads: int, provider: str = "CPUExecutionProvider",
             standard: bool = True) -> list[dict]:
    """Dense vs DynamicLearners vs standard-ops in ONNX Runtime, one row per (tokens, budget)."""
    import onnxruntime as ort
    from acmtool.runtime import library_path
    n = op_cpu.N
    rng = np.random.default_rng(0)
    dense_w, learners = op_cpu.weights(rng)

    def session(model, custom=False):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        if custom:
            opts.register_custom_ops_library(library_path())
        data = model if isinstance(model, str) else model.SerializeToString()
        return ort.InferenceSession(data, opts, providers=[provider])

    x0 = rng.standard_normal((1, 8, op_cpu.D)).astype(np.float32)
    sessions = {"dense": session(op_cpu.dense_model(*dense_w)), "custom": session(op_cpu.custom_model(learners), True)}
    if standard:
        with tempfile.TemporaryDirectory() as tmp:  # dynamic batch and seq: one export serves every size
            sessions["standard"] = session(op_cpu.standard_model(learners, x0, np.full((1, 8), 2, np.int64),
                                                                 Path(tmp)))
    rows = []
    for t in tokens:
        x = rng.standard_normal((1, t, op_cpu.D)).astype(np.float32)
        full = np.full((1, t), n, np.int64)
        y_dense = sessions["dense"].run(None, {"X": x})[0]
        for name in sessions:
            if name != "dense":
                y = sessions[name].run(None, {"X": x, "K": full})[0]
                assert np.abs(y - y_dense).max() < 1e-3, f"{name} at K = N differs from dense ({t} tokens)"
        for bud in budgets:
            k = rng.binomial(n, bud, (1, t)).astype(np.int64)
            feeds = {"dense": {"X": x}, "custom": {"X": x, "K": k}, "standard": {"X": x, "K": k}}
            runs = {name: (lambda s=s, f=feeds[name]: s.run(None, f)) for name, s in sessions.items()}
            runs["custom_full"] = lambda s=sessions["custom"]: s.run(None, {"X": x, "K": full})
            times = time_interleaved(runs, warmup=2, iters=rounds)
            mean_k = float(k.mean() / n)
            vs_full = _ratio(times, "custom_full", "custom")
            row = {"provider": provider, "tokens": t, "budget": bud, "mean_k_over_n": mean_k,
                   **{f"{name}_ms": float(np.median(v) * 1e3) for name, v in times.items()},
                   "speedup_vs_dense": _ratio(times, "dense", "custom"), "speedup_vs_full": vs_full,
                   # of the ideal 1 / (mean K/N); nan when no learner runs (no ideal to reach)
                   "share_of_ideal": vs_full * mean_k if mean_k > 0 else float("nan")}
            if "standard" in times:
                row["speedup_vs_standard"] = _ratio(times, "standard", "custom")
            rows.append(row)
    return rows


def torch_rows(budgets, tokens, rounds: int, device: str = "cpu") -> list[dict]:
    """Dense vs grouped vs naive DynamicLearners in PyTorch, one row per (tokens, budget)."""
    from acmtool.ops.dynamic_learners import dynamic_learners_grouped, dynamic_learners_reference
    gen = torch.Generator().manual_seed(torch_paths.SEED)
    (w1, b1, w2, b2), (fc1_w, fc1_b, fc2_w, fc2_b) = [
        tuple(t.to(device) for t in ws) for ws in torch_paths.make_weights(gen)]
    act = torch_paths.ACTIVATION
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    rows = []
    with torch.inference_mode():
        for t in tokens:
            x = torch.randn(1, t, torch_paths.DIN, generator=gen).to(device)
            for bud in budgets:
                k = torch_paths.draw_k((1, t), bud, gen).to(device)

                def timed(fn):
                    def run():
                        fn()
                        sync()
                    return run
                runs = {"dense": timed(lambda: F.linear(F.gelu(F.linear(x, fc1_w, fc1_b)), fc2_w, fc2_b)),
                        "grouped": timed(lambda: dynamic_learners_grouped(x, k, w1, b1, w2, b2, act)),
                        "naive": timed(lambda: dynamic_learners_reference(x, k, w1, b1, w2, b2, act))}
                diff = (dynamic_learners_grouped(x, k, w1, b1, w2, b2, act)
                        - dynamic_learners_reference(x, k, w1, b1, w2, b2, act)).abs().max().item()
                assert diff <= 1e-4, f"grouped and naive differ by {diff:.3g}"
                times = time_interleaved(runs, warmup=2, iters=rounds)
                rows.append({"device": device, "tokens": t, "budget": bud,
                             "mean_k_over_n": float(k.double().mean() / torch_paths.N),
                             **{f"{name}_ms": float(np.median(v) * 1e3) for name, v in times.items()},
                             "grouped_speedup_vs_dense": _ratio(times, "dense", "grouped"),
                             "grouped_speedup_vs_naive": _ratio(times, "naive", "grouped")})
    return rows


def cuda_reason() -> str | None:
    """None when the CUDA benchmarks can run, else why not."""
    import onnxruntime as ort
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider"
    return None


def render_ort(rows: list[dict]) -> str:
    has_std = any("standard_ms" in r for r in rows)
    head = ["tokens", "budget", "mean K/N", "dense ms", "DynLearners ms"] + (["standard ms"] if has_std else []) \
        + ["vs dense"] + (["vs standard"] if has_std else []) + ["vs own K=N", "of ideal"]
    body = []
    for r in rows:
        body.append([str(r["tokens"]), f"{r['budget']:.3f}", f"{r['mean_k_over_n']:.3f}", f"{r['dense_ms']:.3f}",
                     f"{r['custom_ms']:.3f}"] + ([f"{r.get('standard_ms', float('nan')):.3f}"] if has_std else [])
                    + [f"{r['speedup_vs_dense']:.2f}x"]
                    + ([f"{r.get('speedup_vs_standard', float('nan')):.2f}x"] if has_std else [])
                    + [f"{r['speedup_vs_full']:.2f}x", f"{100 * r['share_of_ideal']:.0f} %"])
    return table(head, body)


def render_torch(rows: list[dict]) -> str:
    return table(["tokens", "budget", "mean K/N", "dense ms", "grouped ms", "naive ms", "vs dense", "vs naive"],
                 [[str(r["tokens"]), f"{r['budget']:.3f}", f"{r['mean_k_over_n']:.3f}", f"{r['dense_ms']:.3f}",
                   f"{r['grouped_ms']:.3f}", f"{r['naive_ms']:.3f}", f"{r['grouped_speedup_vs_dense']:.2f}x",
                   f"{r['grouped_speedup_vs_naive']:.2f}x"] for r in rows])
