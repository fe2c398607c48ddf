"""Quick timing of the CPU kernel against the dense MLP in ONNX Runtime, side by side in one process.

    python custom_ops/tools/time_cpu_kernel.py [--batch 8] [--threads 2] [--reps 30] [--library PATH]

The ViT-B MLP (768 -> 3072 -> 768, GELU) as ONNX Runtime runs it densely (MatMul, Add, Gelu,
MatMul, Add; weights as initializers, so MLAS prepacks them) against DynamicLearners with N = 4
learners of width 768 (the same weights split into learners), for K constant (budget * N) and
mixed (several K with mean budget * N). Each round runs every session once, so slow spells of a
shared machine hit all of them; it prints min, q25 and median per session and the speed-ups.
(Not the benchmark of benchmarks/: a check while working on custom_ops/.)
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=197)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--library", default=None, help="default: acmtool.runtime.build.build_custom_ops()")
    args = parser.parse_args()
    if args.library is None:
        from acmtool.runtime.build import build_custom_ops
        args.library = str(build_custom_ops())

    b, s, d, hidden, n = args.batch, args.tokens, 768, 3072, 4
    h = hidden // n
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((d, hidden)) * 0.02).astype(np.float32)
    b1 = (rng.standard_normal(hidden) * 0.02).astype(np.float32)
    w2 = (rng.standard_normal((hidden, d)) * 0.02).astype(np.float32)
    b2 = (rng.standard_normal(d) * 0.02).astype(np.float32)
    x_info = helper.make_tensor_value_info("X", TensorProto.FLOAT, [b, s, d])
    y_info = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [b, s, d])

    dense = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["X", "W1"], ["a"]), helper.make_node("Add", ["a", "B1"], ["b"]),
         helper.make_node("Gelu", ["b"], ["c"]), helper.make_node("MatMul", ["c", "W2"], ["e"]),
         helper.make_node("Add", ["e", "B2"], ["Y"])], "dense", [x_info], [y_info],
        [numpy_helper.from_array(a, name) for name, a in (("W1", w1), ("B1", b1), ("W2", w2), ("B2", b2))]),
        opset_imports=[helper.make_opsetid("", 20)])
    learners = {"W1": w1.reshape(d, n, h).transpose(1, 0, 2).copy(), "B1": b1.reshape(n, h).copy(),
                "W2": w2.reshape(n, h, d).copy(), "B2": b2}
    dyn = helper.make_model(helper.make_graph(
        [helper.make_node("DynamicLearners", ["X", "K", "W1", "B1", "W2", "B2"], ["Y"], domain="ai.acmtool",
                          activation="gelu")], "dynamic_learners",
        [x_info, helper.make_tensor_value_info("K", TensorProto.INT64, [b, s])], [y_info],
        [numpy_helper.from_array(a, name) for name, a in learners.items()]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.acmtool", 1)])

    def session(model, custom):
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        if custom:
            options.register_custom_ops_library(args.library)
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    s_dense, s_dyn = session(dense, False), session(dyn, True)
    x = rng.standard_normal((b, s, d)).astype(np.float32)
    y_dense = s_dense.run(None, {"X": x})[0]
    y_full = s_dyn.run(None, {"X": x, "K": np.full((b, s), n, np.int64)})[0]
    print(f"{b}x{s} tokens, {args.threads} intra-op threads; max |dense - DynamicLearners(K=N)| = "
          f"{np.abs(y_dense - y_full).max():.2e}")

    mixed = {0.25: ([0, 1, 2], [0.25, 0.5, 0.25]), 0.5: ([0, 1, 2, 3, 4], [0.2] * 5), 1.0: ([n], [1.0])}
    cases = {}
    for budget in (0.25, 0.5, 1.0):
        cases[f"budget {budget:.2f}, K = {round(budget * n)}"] = np.full((b, s), round(budget * n), np.int64)
        if budget < 1:
            values, p = mixed[budget]
            cases[f"budget {budget:.2f}, K mixed"] = rng.choice(values, size=(b, s), p=p).astype(np.int64)
    times = {"dense": []} | {name: [] for name in cases}
    for _ in range(2):
        s_dense.run(None, {"X": x})
        for k in cases.values():
            s_dyn.run(None, {"X": x, "K": k})
    for _ in range(args.reps):
        t = time.perf_counter()
        s_dense.run(None, {"X": x})
        times["dense"].append(time.perf_counter() - t)
        for name, k in cases.items():
            t = time.perf_counter()
            s_dyn.run(None, {"X": x, "K": k})
            times[name].append(time.perf_counter() - t)

    dense_t = np.array(times["dense"])
    print(f"{'dense MatMul-Add-Gelu-MatMul-Add':34s} min {dense_t.min() * 1e3:7.1f} ms  "
          f"q25 {np.quantile(dense_t, 0.25) * 1e3:7.1f}  median {np.median(dense_t) * 1e3:7.1f}")
    for name, k in cases.items():
        t = np.array(times[name])
        print(f"{name + f' (mean K {k.mean():.2f})':34s} min {t.min() * 1e3:7.1f} ms  "
              f"q25 {np.quantile(t, 0.25) * 1e3:7.1f}  median {np.median(t) * 1e3:7.1f}   speed-up "
              f"min {dense_t.min() / t.min():.2f}x  q25 {np.quantile(dense_t, 0.25) / np.quantile(t, 0.25):.2f}x  "
              f"median {np.median(dense_t) / np.median(t):.2f}x  per-round median {np.median(dense_t / t):.2f}x")


if __name__ == "__main__":
    main()
