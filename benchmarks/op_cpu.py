"""DynamicLearners in ONNX Runtime on CPU against the dense MLP and the standard-ops export.

    python -m benchmarks.op_cpu [--tokens 8x197] [--rounds 30] [--threads T] [--json FILE]

The ViT-B MLP (768 -> 3072 -> 768, GELU, fp32) as ONNX Runtime runs it densely (MatMul, Add,
Gelu, MatMul, Add), against the same weights as N = 4 learners: one ai.acmtool::DynamicLearners
node, and the standard-ops graph that `acmtool export --format standard` writes for an ACM. K is
drawn per token from Binomial(N, budget) (fixed seed), so its mean matches the budget. Each round
runs every session once, so slow spells of the machine hit all alike; speed-ups are medians of
per-round ratios. Intra-op threads = cores by default.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from acmtool.cli.format import table
from acmtool.ops.masked import dynamic_learners_masked
from acmtool.runtime import library_path
from benchmarks.machine import setup, tag

D, HIDDEN, N = 768, 3072, 4
BUDGETS = (0.25, 0.5, 1.0)
RESULTS = Path(__file__).parent / "results"


def weights(rng):
    w1 = (rng.standard_normal((D, HIDDEN)) * 0.02).astype(np.float32)
    b1 = (rng.standard_normal(HIDDEN) * 0.02).astype(np.float32)
    w2 = (rng.standard_normal((HIDDEN, D)) * 0.02).astype(np.float32)
    b2 = (rng.standard_normal(D) * 0.02).astype(np.float32)
    h = HIDDEN // N
    learners = {"W1": w1.reshape(D, N, h).transpose(1, 0, 2).copy(), "B1": b1.reshape(N, h).copy(),
                "W2": w2.reshape(N, h, D).copy(), "B2": b2}
    return (w1, b1, w2, b2), learners


def dense_model(w1, b1, w2, b2):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", "seq", D])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", "seq", D])
    nodes = [helper.make_node("MatMul", ["X", "W1"], ["a"]), helper.make_node("Add", ["a", "B1"], ["b"]),
             helper.make_node("Gelu", ["b"], ["c"]), helper.make_node("MatMul", ["c", "W2"], ["e"]),
             helper.make_node("Add", ["e", "B2"], ["Y"])]
    inits = [numpy_helper.from_array(a, n) for n, a in (("W1", w1), ("B1", b1), ("W2", w2), ("B2", b2))]
    return helper.make_model(helper.make_graph(nodes, "dense", [x], [y], inits), opset_imports=[helper.make_opsetid("", 20)])


def custom_model(learners):
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", "seq", D])
    k = helper.make_tensor_value_info("K", TensorProto.INT64, ["batch", "seq"])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", "seq", D])
    node = helper.make_node("DynamicLearners", ["X", "K", "W1", "B1", "W2", "B2"], ["Y"], domain="ai.acmtool",
                            activation="gelu")
    inits = [numpy_helper.from_array(a, n) for n, a in learners.items()]
    return helper.make_model(helper.make_graph([node], "dynamic_learners", [x, k], [y], inits),
                             opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.acmtool", 1)])


class Masked(torch.nn.Module):
    """What the standard export traces for an ACM, with K as an input."""

    def __init__(self, learners):
        super().__init__()
        for name, a in learners.items():
            self.register_buffer(name.lower(), torch.from_numpy(a))

    def forward(self, x, k):
        return dynamic_learners_masked(x, k, self.w1, self.b1, self.w2, self.b2, "gelu")


def standard_model(learners, x, k, folder: Path) -> str:
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    program = torch.onnx.export(Masked(learners).eval(), (torch.from_numpy(x), torch.from_numpy(k)), dynamo=True,
                                dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}), optimize=True,
                                input_names=["X", "K"], verbose=False)
    path = folder / "standard.onnx"
    program.save(str(path))
    return str(path)


def main(argv=None) -> list:
    import onnxruntime as ort
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="8x197")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    b, s = map(int, a.tokens.split("x"))
    rng = np.random.default_rng(0)
    dense_w, learners = weights(rng)
    x = rng.standard_normal((b, s, D)).astype(np.float32)
    ks = {bud: rng.binomial(N, bud, (b, s)).astype(np.int64) for bud in BUDGETS}

    def session(model, custom=False):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        if custom:
            opts.register_custom_ops_library(library_path())
        data = model if isinstance(model, str) else model.SerializeToString()
        return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {"dense": session(dense_model(*dense_w)), "custom": session(custom_model(learners), True),
                    "standard": session(standard_model(learners, x, ks[0.5], Path(tmp)))}
    # correctness first: both ACM graphs agree with each other and, at K = N, with the dense MLP
    full = np.full((b, s), N, np.int64)
    y_dense = sessions["dense"].run(None, {"X": x})[0]
    for name in ("custom", "standard"):
        y = sessions[name].run(None, {"X": x, "K": full})[0]
        assert np.abs(y - y_dense).max() < 1e-4, f"{name} at K = N differs from dense"
    for k in ks.values():
        y1, y2 = (sessions[n].run(None, {"X": x, "K": k})[0] for n in ("custom", "standard"))
        assert np.abs(y1 - y2).max() < 1e-4, "custom-op and standard graphs disagree"

    rows = []
    for bud, k in ks.items():
        feeds = {"dense": {"X": x}, "custom": {"X": x, "K": k}, "standard": {"X": x, "K": k}}
        for name, sess in sessions.items():  # warm-up
            sess.run(None, feeds[name])
        t = {name: [] for name in sessions}
        for r in range(a.rounds):
            for name in list(sessions)[r % 3:] + list(sessions)[:r % 3]:  # rotate the order
                start = time.perf_counter()
                sessions[name].run(None, feeds[name])
                t[name].append(time.perf_counter() - start)
        arr = {n: np.array(v) for n, v in t.items()}
        rows.append({"budget": bud, "mean_k_over_n": float(k.mean() / N),
                     **{f"{n}_ms": float(np.median(v) * 1e3) for n, v in arr.items()},
                     "speedup_vs_dense": float(np.median(arr["dense"] / arr["custom"])),
                     "speedup_vs_standard": float(np.median(arr["standard"] / arr["custom"]))})
    print(f"onnxruntime {ort.__version__}, {a.threads} intra-op threads; MLP {D}->{HIDDEN}->{D}, N={N}, gelu, fp32, "
          f"{b}x{s} tokens; medians of {a.rounds} rounds")
    print(table(["budget", "mean K/N", "dense ms", "DynamicLearners ms", "standard ms", "vs dense", "vs standard"],
                [[f"{r['budget']:.2f}", f"{r['mean_k_over_n']:.3f}", f"{r['dense_ms']:.1f}", f"{r['custom_ms']:.1f}",
                  f"{r['standard_ms']:.1f}", f"{r['speedup_vs_dense']:.2f}x", f"{r['speedup_vs_standard']:.2f}x"]
                 for r in rows]))
    print("vs dense / vs standard: that time divided by DynamicLearners' (median of per-round ratios)")
    out = a.json or RESULTS / f"op-cpu-{tag()}-t{a.threads}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setup": setup(), "tokens": a.tokens, "threads": a.threads, "rows": rows}, indent=2))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
