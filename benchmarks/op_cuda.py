"""DynamicLearners on CUDA against the dense MLP, with pass/fail against the speed targets.

    python -m benchmarks.op_cuda [--binary PATH] [--library PATH] [--tokens 128x197] [--dtypes fp16,bf16]
                                 [--warmup 20] [--iters 100] [--json FILE] [--dry-run]

The ViT-B MLP (768 -> 3072 -> 768, GELU) as N = 4 learners, 128 x 197 tokens, fp16 and bf16. K is
drawn per token from Binomial(N, budget) with a fixed seed (as benchmarks/op_cpu.py), budgets 0.25,
0.5 and 1.0. Every time is the median of --iters runs, each between two CUDA events, after --warmup
runs. Paths:

  dynamic_learners  the op's own code (RunDynamicLearners: bucketing by K on the device, cuBLASLt
                    GEMMs, fused bias + GELU, scatter back) through the standalone program's --bench
                    mode (custom_ops/cuda/tests/test_dynamic_learners_cuda.cc): no ONNX Runtime needed
  dense_cublaslt    the dense MLP in that program: the same cuBLASLt GEMMs and bias + GELU kernel
  dense_torch       F.linear -> F.gelu -> F.linear in torch (when torch sees the GPU)
  ort_*             the DynamicLearners node and the dense MLP graph in onnxruntime-gpu, when it is
                    installed: informational, since they include ONNX Runtime's own per-run costs

Targets (speed-up of dynamic_learners over the faster dense path of its dtype): budget 0.25 at least
3x, 0.5 at least 1.7x, 1.0 no more than 10 % slower (>= 1/1.1). Prints a table and one JSON summary
(also written to --json); exit 0 when every target passes, 1 when one fails, 2 on a usage error or a
failed run, 77 when there is no CUDA device (nothing measured; the JSON says why).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUILD = REPO / "build" / "custom_ops_cuda"
D, HIDDEN, N = 768, 3072, 4
BUDGETS = (0.25, 0.5, 1.0)
TARGETS = {0.25: 3.0, 0.5: 1.7, 1.0: 1 / 1.1}  # minimum speed-up over dense
DTYPE_NAMES = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16",
               "fp32": "float32", "float32": "float32"}
SKIP = 77


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", type=Path, default=DEFAULT_BUILD / "test_dynamic_learners_cuda",
                   help="the standalone program (built with -DACMTOOL_CUDA=ON)")
    p.add_argument("--library", type=Path, default=DEFAULT_BUILD / "libacmtool_ops.so",
                   help="the custom-op library, for the optional onnxruntime-gpu paths")
    p.add_argument("--tokens", default="128x197", help="BATCHxSEQ")
    p.add_argument("--dtypes", default="fp16,bf16")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--no-ort", action="store_true", help="skip the onnxruntime-gpu paths")
    p.add_argument("--dry-run", action="store_true", help="check the arguments and the binary, print the plan, run nothing")
    a = p.parse_args(argv)
    try:
        a.batch, a.seq = (int(v) for v in a.tokens.lower().split("x"))
    except ValueError:
        p.error(f"--tokens must be BATCHxSEQ, e.g. 128x197; got {a.tokens!r}")
    if a.batch <= 0 or a.seq <= 0:
        p.error("--tokens must be positive")
    try:
        a.dtype_list = [DTYPE_NAMES[d.strip().lower()] for d in a.dtypes.split(",") if d.strip()]
    except KeyError as e:
        p.error(f"--dtypes: unknown {e.args[0]!r} (fp16, bf16, fp32)")
    if not a.dtype_list:
        p.error("--dtypes is empty")
    if a.warmup < 0 or a.iters <= 0:
        p.error("--warmup must be >= 0 and --iters > 0")
    return a


def run_binary(a) -> dict:
    """The standalone program's --bench JSON; raises SystemExit(77) when it finds no device."""
    short = {"float16": "fp16", "bfloat16": "bf16", "float32": "fp32"}
    cmd = [str(a.binary), "--bench", "--tokens", str(a.batch * a.seq), "--din", str(D), "--hidden", str(HIDDEN),
           "--learners", str(N), "--dtypes", ",".join(short[d] for d in a.dtype_list),
           "--budgets", ",".join(map(str, BUDGETS)), "--warmup", str(a.warmup), "--iters", str(a.iters)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode == SKIP:
        raise NoDevice(proc.stdout.strip().replace("SKIP: ", "") or "the benchmark program found no CUDA device")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr.strip()
    return out


class NoDevice(Exception):
    pass


def cuda_events_median(fn, warmup: int, iters: int) -> float:
    import torch
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
    for start, stop in pairs:
        start.record()
        fn()
        stop.record()
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(stop) for start, stop in pairs)


def torch_dense(a) -> dict:
    """F.linear -> F.gelu -> F.linear; {dtype: ms} or {"error": ...}."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError as e:
        return {"error": f"no torch: {e}"}
    if not torch.cuda.is_available():
        return {"error": "torch sees no CUDA device"}
    out = {}
    g = torch.Generator(device="cuda").manual_seed(0)
    for name in a.dtype_list:
        dt = getattr(torch, name)
        x = torch.randn(a.batch, a.seq, D, device="cuda", dtype=dt, generator=g)
        w1 = torch.randn(HIDDEN, D, device="cuda", dtype=dt, generator=g) * 0.02
        b1 = torch.randn(HIDDEN, device="cuda", dtype=dt, generator=g) * 0.02
        w2 = torch.randn(D, HIDDEN, device="cuda", dtype=dt, generator=g) * 0.02
        b2 = torch.randn(D, device="cuda", dtype=dt, generator=g) * 0.02
        with torch.inference_mode():
            out[name] = cuda_events_median(lambda: F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2), a.warmup, a.iters)
    return out


def ort_paths(a) -> dict:
    """DynamicLearners and the dense MLP in onnxruntime-gpu, inputs and outputs bound on the GPU."""
    try:
        import numpy as np
        import onnxruntime as ort
        import torch
        from onnx import TensorProto, helper
    except ImportError as e:
        return {"skipped": f"not installed: {e}"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"skipped": f"no onnxruntime-gpu (onnxruntime {ort.__version__}: {ort.get_available_providers()})"}
    if not a.library.is_file():
        return {"skipped": f"no library at {a.library}"}
    results = {}
    rng = np.random.default_rng(0)
    h = HIDDEN // N
    for name in a.dtype_list:
        try:
            elem = {"float16": TensorProto.FLOAT16, "bfloat16": TensorProto.BFLOAT16, "float32": TensorProto.FLOAT}[name]
            tdt = getattr(torch, name)

            def init(array, key):
                t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(tdt)
                raw = (t.view(torch.int16) if t.element_size() == 2 else t).numpy().tobytes()
                return helper.make_tensor(key, elem, list(t.shape), raw, raw=True)

            w1 = rng.standard_normal((D, HIDDEN)) * 0.02
            b1 = rng.standard_normal(HIDDEN) * 0.02
            w2 = rng.standard_normal((HIDDEN, D)) * 0.02
            b2 = rng.standard_normal(D) * 0.02
            x_info = helper.make_tensor_value_info("X", elem, ["b", "s", D])
            y_info = helper.make_tensor_value_info("Y", elem, ["b", "s", D])
            dense = helper.make_model(helper.make_graph(
                [helper.make_node("MatMul", ["X", "W1"], ["a"]), helper.make_node("Add", ["a", "B1"], ["c"]),
                 helper.make_node("Gelu", ["c"], ["g"]), helper.make_node("MatMul", ["g", "W2"], ["e"]),
                 helper.make_node("Add", ["e", "B2"], ["Y"])], "dense", [x_info], [y_info],
                [init(w1, "W1"), init(b1, "B1"), init(w2, "W2"), init(b2, "B2")]),
                opset_imports=[helper.make_opsetid("", 20)])
            k_info = helper.make_tensor_value_info("K", TensorProto.INT64, ["b", "s"])
            learners = {"W1": w1.reshape(D, N, h).transpose(1, 0, 2), "B1": b1.reshape(N, h),
                        "W2": w2.reshape(N, h, D), "B2": b2}
            custom = helper.make_model(helper.make_graph(
                [helper.make_node("DynamicLearners", ["X", "K", "W1", "B1", "W2", "B2"], ["Y"], domain="ai.acmtool",
                                  activation="gelu")], "dynamic_learners", [x_info, k_info], [y_info],
                [init(v, k) for k, v in learners.items()]),
                opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("ai.acmtool", 1)])

            def session(model, custom_op):
                opts = ort.SessionOptions()
                if custom_op:
                    opts.register_custom_ops_library(str(a.library))
                    opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
                return ort.InferenceSession(model.SerializeToString(), opts, providers=["CUDAExecutionProvider"])

            x = torch.randn(a.batch, a.seq, D, device="cuda", dtype=tdt)
            y = torch.empty_like(x)

            def bound(sess, k=None):
                binding = sess.io_binding()
                binding.bind_input("X", "cuda", 0, elem, list(x.shape), x.data_ptr())
                if k is not None:
                    binding.bind_input("K", "cuda", 0, TensorProto.INT64, list(k.shape), k.data_ptr())
                binding.bind_output("Y", "cuda", 0, elem, list(y.shape), y.data_ptr())
                return lambda: sess.run_with_iobinding(binding)

            entry = {}
            try:
                entry["dense_ms"] = cuda_events_median(bound(session(dense, False)), a.warmup, a.iters)
            except Exception as e:  # e.g. no bfloat16 Gelu kernel in this onnxruntime
                entry["dense_error"] = str(e).splitlines()[0][:300]
            sess = session(custom, True)
            for budget in BUDGETS:
                k = torch.from_numpy(rng.binomial(N, budget, (a.batch, a.seq)).astype(np.int64)).cuda()
                entry[f"dynamic_learners_{budget}_ms"] = cuda_events_median(bound(sess, k), a.warmup, a.iters)
            results[name] = entry
        except Exception as e:
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    return results


def summarize(a, bench: dict, torch_ms: dict, ort: dict) -> dict:
    rows, passed = [], True
    by_dtype = {}
    for r in bench["results"]:
        by_dtype.setdefault(r["dtype"], []).append(r)
    checks = {}
    for dtype, entries in by_dtype.items():
        dense_cublas = next(r["median_ms"] for r in entries if r.get("path") == "dense_cublaslt")
        check = next((r for r in entries if r.get("check")), None)
        if check:
            # K = N everywhere must reproduce the dense MLP (rounding of the op's type aside).
            tol = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 1e-1}[dtype] * max(1.0, check["max_abs_dense"])
            checks[dtype] = {"max_abs_diff": check["max_abs_diff"], "tolerance": tol,
                             "pass": check["max_abs_diff"] <= tol}
            passed &= checks[dtype]["pass"]
        dense_torch = torch_ms.get(dtype) if isinstance(torch_ms.get(dtype), float) else None
        dense = min(v for v in (dense_cublas, dense_torch) if v is not None)
        for r in entries:
            if r.get("path") != "dynamic_learners":
                continue
            speedup = dense / r["median_ms"]
            target = TARGETS[r["budget"]]
            ok = speedup >= target
            passed &= ok
            rows.append({"dtype": dtype, "budget": r["budget"], "mean_k_over_n": r["mean_k_over_n"],
                         "dynamic_learners_ms": r["median_ms"], "dense_cublaslt_ms": dense_cublas,
                         "dense_torch_ms": dense_torch, "dense_ms": dense, "speedup": speedup,
                         "target": target, "pass": ok})
    return {"status": "pass" if passed else "fail", "device": bench.get("device"),
            "tokens": f"{a.batch}x{a.seq}", "mlp": f"{D}->{HIDDEN}->{D}", "learners": N, "activation": "gelu",
            "warmup": a.warmup, "iters": a.iters,
            "dynamic_learners_path": "standalone program --bench (RunDynamicLearners; no ONNX Runtime)",
            "dense_baseline": "the faster of dense_cublaslt and dense_torch", "k_equals_n_check": checks,
            "rows": rows, "dense_torch": torch_ms, "onnxruntime_gpu": ort}


def print_table(summary: dict) -> None:
    print(f"{summary['device']}: MLP {summary['mlp']}, N={summary['learners']}, GELU, {summary['tokens']} tokens; "
          f"medians of {summary['iters']} runs (CUDA events) after {summary['warmup']} warm-up runs")
    head = ["dtype", "budget", "mean K/N", "DynamicLearners ms", "dense cuBLASLt ms", "dense torch ms", "speed-up",
            "target", ""]
    lines = [head]
    for r in summary["rows"]:
        lines.append([r["dtype"], f"{r['budget']:.2f}", f"{r['mean_k_over_n']:.3f}", f"{r['dynamic_learners_ms']:.3f}",
                      f"{r['dense_cublaslt_ms']:.3f}",
                      f"{r['dense_torch_ms']:.3f}" if r["dense_torch_ms"] is not None else "-",
                      f"{r['speedup']:.2f}x", f">= {r['target']:.2f}x", "pass" if r["pass"] else "FAIL"])
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    for row in lines:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
    for dtype, c in summary["k_equals_n_check"].items():
        print(f"{dtype}: K = N matches the dense MLP: max |diff| {c['max_abs_diff']:.3g} "
              f"(tolerance {c['tolerance']:.3g}) {'pass' if c['pass'] else 'FAIL'}")


def write(summary: dict, path: Path | None) -> None:
    text = json.dumps(summary, indent=2)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    print(text)


def main(argv=None) -> int:
    a = parse_args(argv)
    if not a.binary.is_file() or not os.access(a.binary, os.X_OK):
        print(f"op_cuda: {a.binary} is not built (cmake -S custom_ops -B build/custom_ops_cuda -DACMTOOL_CUDA=ON, "
              f"or benchmarks/gpu_check.sh)", file=sys.stderr)
        return 2
    if a.dry_run:
        write({"status": "dry-run", "binary": str(a.binary), "tokens": f"{a.batch}x{a.seq}", "dtypes": a.dtype_list,
               "budgets": list(BUDGETS), "targets": {str(k): v for k, v in TARGETS.items()},
               "warmup": a.warmup, "iters": a.iters}, None)
        return 0
    try:
        bench = run_binary(a)
    except NoDevice as e:
        reason = str(e) if str(e).startswith("no CUDA device") else f"no CUDA device: {e}"
        write({"status": "skipped", "reason": reason}, a.json)
        return SKIP
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        write({"status": "error", "reason": str(e)}, a.json)
        return 2
    torch_ms = torch_dense(a)
    ort = {"skipped": "--no-ort"} if a.no_ort else ort_paths(a)
    summary = summarize(a, bench, torch_ms, ort)
    print_table(summary)
    write(summary, a.json)
    return 0 if summary["status"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
