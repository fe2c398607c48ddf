"""The CPU kernel of ai.acmtool::DynamicLearners (custom_ops/) in ONNX Runtime, against the PyTorch
reference `dynamic_learners_reference`, output by output.

The library is built with CMake on first use (acmtool/runtime/build.py; ACMTOOL_OPS_LIBRARY names a
prebuilt one instead). Missing build tools or ONNX Runtime headers skip these tests with the reason;
a failing build fails them.
"""
from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from acmtool.ops.activations import ACTIVATIONS  # noqa: E402
from acmtool.ops.dynamic_learners import dynamic_learners_reference  # noqa: E402
from acmtool.runtime.build import BuildUnavailable, build_custom_ops  # noqa: E402

DOMAIN = "ai.acmtool"
INPUTS = ("X", "K", "W1", "B1", "W2", "B2")
ISAS = ("avx512", "avx2", "generic")
_state = ort.capi.onnxruntime_pybind11_state
# What a bad Run raises (the kernel's status: INVALID_ARGUMENT, or FAIL).
_FAILURES = (_state.Fail, _state.InvalidArgument)
# What a model refused when the session is created raises: INVALID_GRAPH for a declared input type
# that does not match, RUNTIME_EXCEPTION ("Exception during initialization: ...") for the kernel's
# own refusal (a bad attribute), as ONNX Runtime wraps it.
_LOAD_FAILURES = (_state.InvalidGraph, _state.RuntimeException, _state.Fail, _state.InvalidArgument)


@pytest.fixture(scope="module")
def library() -> str:
    prebuilt = os.environ.get("ACMTOOL_OPS_LIBRARY")
    if prebuilt:
        assert os.path.isfile(prebuilt), f"ACMTOOL_OPS_LIBRARY={prebuilt} does not exist"
        return prebuilt
    try:
        return str(build_custom_ops())
    except BuildUnavailable as e:
        pytest.skip(f"cannot build custom_ops/: {e}")


# ------------------------------------------------------------------------------------------------
# Models and sessions


def make_model(activation="gelu", *, b1=True, b2=True, initializers=None, dims=None, types=None,
               omit_trailing_b2=False, attributes=None):
    """A one-node DynamicLearners graph. `initializers`: name -> array stored in the graph instead of
    fed; `dims`: name -> shape of the graph input (strings are dynamic dims; absent: unknown shape);
    `types`: name -> TensorProto type (default float, K int64)."""
    initializers = initializers or {}
    dims = dims or {}
    types = types or {}
    present = {"X": True, "K": True, "W1": True, "B1": b1, "W2": True, "B2": b2}
    node_inputs = [name if present[name] else "" for name in INPUTS]
    if omit_trailing_b2 and not b2:
        node_inputs = node_inputs[:5]
    attrs = {"activation": activation} if attributes is None else attributes
    node = helper.make_node("DynamicLearners", node_inputs, ["Y"], domain=DOMAIN, **attrs)
    graph_inputs = []
    for name in INPUTS:
        if present[name] and name not in initializers:
            elem = types.get(name, TensorProto.INT64 if name == "K" else TensorProto.FLOAT)
            graph_inputs.append(helper.make_tensor_value_info(name, elem, dims.get(name)))
    inits = [numpy_helper.from_array(np.ascontiguousarray(a), name) for name, a in initializers.items()]
    graph = helper.make_graph([node], "dynamic_learners", graph_inputs,
                              [helper.make_tensor_value_info("Y", types.get("X", TensorProto.FLOAT), None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])


@contextmanager
def kernel_env(**variables):
    """Environment variables the kernel reads when a session is created: ACMTOOL_CPU_ISA (which
    micro-kernel), ACMTOOL_CPU_SCHEDULE (row blocks or column panels per thread). None: unset."""
    old = {name: os.environ.get(name) for name in variables}
    for name, value in variables.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_session(library, model, *, isa=None, schedule=None, threads=0):
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    options.intra_op_num_threads = threads
    # Every tensor its own allocation (no arena carving one block), so that AddressSanitizer
    # (`make test-asan`) sees a read or write past the end of an input or of Y.
    options.enable_cpu_mem_arena = False
    with kernel_env(ACMTOOL_CPU_ISA=isa, ACMTOOL_CPU_SCHEDULE=schedule):
        try:
            return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except _LOAD_FAILURES as e:
            if isa in ISAS and "is not available on this CPU" in str(e):
                pytest.skip(f"{isa} micro-kernel: {e}")
            raise


def make_case(lead, n, din, h, dout, *, b1=True, b2=True, k="mixed", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, din, generator=g)
    w1 = torch.randn(n, din, h, generator=g) / max(din, 1) ** 0.5
    b1_ = torch.randn(n, h, generator=g) if b1 else None
    w2 = torch.randn(n, h, dout, generator=g) / max(h, 1) ** 0.5
    b2_ = torch.randn(dout, generator=g) if b2 else None
    if k == "zero":
        kk = torch.zeros(lead, dtype=torch.int64)
    elif k == "full":
        kk = torch.full(lead, n, dtype=torch.int64)
    else:
        kk = torch.randint(0, n + 1, lead, generator=g)
    return {"X": x, "K": kk, "W1": w1, "B1": b1_, "W2": w2, "B2": b2_}


def feeds_of(case, skip=()):
    return {name: t.numpy() for name, t in case.items() if t is not None and name not in skip}


def reference(case, activation):
    return dynamic_learners_reference(case["X"], case["K"], case["W1"], case["B1"], case["W2"], case["B2"],
                                      activation).numpy()


def assert_matches(y, ref):
    assert y.shape == ref.shape and y.dtype == np.float32
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=2e-5 * scale)


def run_case(library, case, activation="gelu", *, isa=None, schedule=None, weights_in_graph=False, dims=None,
             threads=0):
    """Build, run, compare with the reference; returns Y."""
    b1, b2 = case["B1"] is not None, case["B2"] is not None
    initializers = {}
    if weights_in_graph:
        initializers = {name: case[name].numpy() for name in ("W1", "B1", "W2", "B2") if case[name] is not None}
    model = make_model(activation, b1=b1, b2=b2, initializers=initializers, dims=dims)
    session = make_session(library, model, isa=isa, schedule=schedule, threads=threads)
    y = session.run(None, feeds_of(case, skip=initializers))[0]
    assert_matches(y, reference(case, activation))
    return y


# ------------------------------------------------------------------------------------------------
# Against the reference

# (X's leading shape, N, Din, h, Dout)
SHAPES = {
    "zero_tokens": ((0,), 3, 13, 7, 5),
    "zero_tokens_rank3": ((2, 0, 3), 3, 13, 7, 5),
    "one_token": ((1,), 3, 13, 7, 5),
    "rank1_x": ((), 3, 13, 7, 5),
    "rank2_odd": ((11,), 4, 13, 7, 5),
    "rank3_odd": ((3, 7), 4, 13, 7, 5),
    "rank4_odd": ((2, 3, 5), 2, 13, 7, 5),
    "one_learner": ((9,), 1, 13, 7, 5),
    "no_learners": ((4,), 0, 13, 7, 5),
    "din_zero": ((5,), 2, 0, 7, 5),
    "h_zero": ((5,), 2, 13, 0, 5),
    "dout_zero": ((5,), 2, 13, 7, 0),
    # several row blocks, partial tiles and panels, k split into blocks (Din, h > 256)
    "blocks": ((3, 67), 4, 300, 45, 37),
    "wide_hidden": ((131,), 3, 40, 260, 33),
    "vit_like_small": ((2, 50), 4, 96, 96, 96),
}


SCHEDULES = ("rows", "columns")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("k", ["mixed", "zero", "full"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_shapes_and_k(library, name, k, schedule):
    """Each shape under both ways of sharing the work among threads (see dynamic_learners.cc)."""
    lead, n, din, h, dout = SHAPES[name]
    run_case(library, make_case(lead, n, din, h, dout, k=k, seed=sum(map(ord, name))), schedule=schedule)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("b1,b2", [(True, True), (True, False), (False, True), (False, False)])
def test_activations_and_biases(library, activation, b1, b2):
    run_case(library, make_case((5, 23), 4, 29, 19, 17, b1=b1, b2=b2), activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_far_range(library, activation):
    """Large pre-activations exercise the tails of exp and erf."""
    case = make_case((64,), 2, 8, 40, 6)
    case["X"] = case["X"] * 30
    run_case(library, case, activation)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_micro_kernel(library, isa, activation):
    """ACMTOOL_CPU_ISA forces each implementation this CPU has (the others skip)."""
    for schedule in SCHEDULES:
        run_case(library, make_case((3, 61), 4, 270, 41, 35), activation, isa=isa, schedule=schedule)
    run_case(library, make_case((7,), 2, 13, 7, 5, b1=False, b2=False), activation, isa=isa)


@pytest.mark.parametrize("name", ["one_token", "rank3_odd", "blocks", "no_learners"])
def test_weights_as_initializers(library, name):
    """Constant W1 and W2 are packed when the session is created: same answers."""
    lead, n, din, h, dout = SHAPES[name]
    run_case(library, make_case(lead, n, din, h, dout), weights_in_graph=True)


@pytest.mark.parametrize("lead", [(), (6,), (2, 5), (2, 3, 4)])
def test_dynamic_dims(library, lead):
    """Graph inputs declared with symbolic dims; the same session serves several shapes."""
    n, din, h, dout = 3, 13, 7, 5
    names = [f"d{i}" for i in range(len(lead))]
    dims = {"X": names + [din], "K": names, "W1": [n, din, h], "B1": [n, h], "W2": [n, h, dout], "B2": [dout]}
    model = make_model("gelu", dims=dims)
    session = make_session(library, model)
    for scale in (1, 2, 0):
        shape = tuple(d * scale for d in lead)
        case = make_case(shape, n, din, h, dout, seed=scale)
        assert_matches(session.run(None, feeds_of(case))[0], reference(case, "gelu"))


def test_trailing_b2_omitted(library):
    """A node with five inputs (B2 left off rather than given as "")."""
    case = make_case((9,), 3, 13, 7, 5, b2=False)
    session = make_session(library, make_model("relu", b2=False, omit_trailing_b2=True))
    assert_matches(session.run(None, feeds_of(case))[0], reference(case, "relu"))


def test_one_intra_op_thread(library):
    run_case(library, make_case((3, 67), 4, 64, 48, 40), threads=1)


# Left to itself (ACMTOOL_CPU_SCHEDULE unset), the kernel gives each thread row blocks of its own
# from 96 rows per CPU on, and splits fewer rows by column panels; small feature sizes keep the
# many-row cases cheap.
MANY_ROWS = 192 * (os.cpu_count() or 1) + 77


@pytest.mark.parametrize("k", ["mixed", "full", "zero"])
@pytest.mark.parametrize("threads", [0, 1])
def test_many_rows(library, k, threads):
    run_case(library, make_case((MANY_ROWS,), 4, 24, 40, 12, k=k), threads=threads)


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("isa", ISAS)
def test_many_rows_every_micro_kernel(library, isa, schedule):
    case = make_case((MANY_ROWS,), 3, 19, 37, 21, b1=False)
    case["K"][: MANY_ROWS // 3] = 0  # a third of the tokens run no learner
    run_case(library, case, "silu", isa=isa, schedule=schedule)


def test_unknown_schedule_is_an_error(library):
    with pytest.raises(_LOAD_FAILURES, match="ACMTOOL_CPU_SCHEDULE=diagonal is not one of auto, rows, columns"):
        make_session(library, make_model("gelu"), schedule="diagonal")


# ------------------------------------------------------------------------------------------------
# Bad inputs: an ONNX Runtime error that names the problem, and the process lives on


def good_run(session, case):
    assert_matches(session.run(None, feeds_of(case))[0], reference(case, "gelu"))


def bad_case(**changes):
    case = make_case((4, 6), 3, 13, 7, 5)
    for name, value in changes.items():
        case[name] = value
    return case


BAD_RUNS = {
    "K_negative": (lambda c: {**c, "K": c["K"].clone().fill_(1).index_fill_(1, torch.tensor([2]), -1)},
                   ["K must lie in [0, 3]", "[-1, 1]"]),
    "K_too_large": (lambda c: {**c, "K": c["K"].clone().fill_(4)}, ["K must lie in [0, 3]", "[4, 4]"]),
    "K_one_too_large": (lambda c: {**c, "K": c["K"].clone().index_fill_(0, torch.tensor([1]), 4)},
                        ["K must lie in [0, 3]", ", 4]"]),
    "K_last_token_negative": (lambda c: {**c, "K": c["K"].clone().fill_(2).index_fill_(1, torch.tensor([5]), -1)},
                              ["K must lie in [0, 3]", "[-1, 2]"]),
    "K_int64_extremes": (lambda c: {**c, "K": c["K"].clone().index_fill_(1, torch.tensor([0]), -2**63)
                                    .index_fill_(1, torch.tensor([3]), 2**63 - 1)},
                         ["K must lie in [0, 3]", f"[{-2**63}, {2**63 - 1}]"]),
    "W1_rank2": (lambda c: {**c, "W1": c["W1"][0]}, ["W1 and W2 must be [N, Din, h]", "[13, 7]"]),
    "W2_rank4": (lambda c: {**c, "W2": c["W2"][None]}, ["W1 and W2 must be [N, Din, h]", "[1, 3, 7, 5]"]),
    "X_rank0": (lambda c: {**c, "X": torch.tensor(1.0), "K": torch.tensor(1)}, ["X must be [..., 13]", "got []"]),
    "X_wrong_din": (lambda c: {**c, "X": c["X"][..., :12]}, ["X must be [..., 13]", "[4, 6, 12]"]),
    "K_wrong_shape": (lambda c: {**c, "K": c["K"][:, :5]}, ["K must have X's shape without its last axis",
                                                             "[4, 6]", "[4, 5]"]),
    "K_wrong_rank": (lambda c: {**c, "K": c["K"][..., None]}, ["K must have X's shape", "[4, 6, 1]"]),
    "W2_mismatch": (lambda c: {**c, "W2": torch.randn(3, 8, 5)}, ["W2 [3, 8, 5] does not match W1 [3, 13, 7]"]),
    "W2_wrong_n": (lambda c: {**c, "W2": torch.randn(2, 7, 5)}, ["W2 [2, 7, 5] does not match W1"]),
    "B1_shape": (lambda c: {**c, "B1": torch.randn(3, 6)}, ["B1 must be [3, 7]", "[3, 6]"]),
    "B2_shape": (lambda c: {**c, "B2": torch.randn(1, 5)}, ["B2 must be [5]", "[1, 5]"]),
}


@pytest.mark.parametrize("name", list(BAD_RUNS))
def test_bad_inputs_at_run(library, name):
    change, expected = BAD_RUNS[name]
    session = make_session(library, make_model("gelu"))
    bad = change(make_case((4, 6), 3, 13, 7, 5))
    with pytest.raises(_FAILURES) as info:
        session.run(None, feeds_of(bad))
    message = str(info.value)
    assert "DynamicLearners" in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    good_run(session, make_case((4, 6), 3, 13, 7, 5))


# K is checked before anything reads it, on every path through the kernel: no output columns, no
# learners, weights packed when the session was created.
K_RANGE_CASES = {
    "dout_zero": (((4, 6), 3, 13, 7, 0), False, "K must lie in [0, 3]"),
    "no_learners": (((4, 6), 0, 13, 7, 5), False, "K must lie in [0, 0]"),
    "prepacked_weights": (((4, 6), 3, 13, 7, 5), True, "K must lie in [0, 3]"),
}


@pytest.mark.parametrize("name", list(K_RANGE_CASES))
def test_k_out_of_range_on_every_path(library, name):
    (lead, n, din, h, dout), in_graph, expected = K_RANGE_CASES[name]
    case = make_case(lead, n, din, h, dout)
    case["K"] = case["K"].clone().fill_(n).index_fill_(0, torch.tensor([2]), n + 1)
    initializers = {w: case[w].numpy() for w in ("W1", "B1", "W2", "B2")} if in_graph else {}
    session = make_session(library, make_model("gelu", initializers=initializers))
    with pytest.raises(_FAILURES, match=re.escape(f"DynamicLearners: {expected} (N = {n} learners); "
                                                  f"got values in [{n}, {n + 1}]")):
        session.run(None, feeds_of(case, skip=initializers))
    case["K"] = case["K"].clamp(0, n)
    assert_matches(session.run(None, feeds_of(case, skip=initializers))[0], reference(case, "gelu"))


def test_first_problem_is_reported_types_before_shapes(library):
    """The checks run in one fixed order (op_definition.cc): X's type before any shape."""
    session = make_session(library, make_model("gelu", types={"X": TensorProto.DOUBLE}))
    bad = feeds_of(bad_case(W2=torch.randn(3, 8, 5)))
    bad["X"] = bad["X"].astype(np.float64)
    with pytest.raises(_FAILURES, match=re.escape("DynamicLearners: X is float64; the CPU kernel computes float32")):
        session.run(None, bad)


@pytest.mark.parametrize("x_type,name", [(TensorProto.DOUBLE, "float64"), (TensorProto.FLOAT16, "float16")])
def test_x_of_another_float_type(library, x_type, name):
    """X is the op's one dynamically typed input: the kernel answers, naming X's type."""
    session = make_session(library, make_model("gelu", types={"X": x_type}))
    feeds = feeds_of(make_case((4, 6), 3, 13, 7, 5))
    feeds["X"] = feeds["X"].astype(np.float64 if x_type == TensorProto.DOUBLE else np.float16)
    with pytest.raises(_FAILURES, match=f"DynamicLearners: X is {name}; the CPU kernel computes float32"):
        session.run(None, feeds)
    good_run(make_session(library, make_model("gelu")), make_case((4, 6), 3, 13, 7, 5))


@pytest.mark.parametrize("name,types,expected", [
    ("W1_float64", {"W1": TensorProto.DOUBLE}, ["W1", "tensor(double)"]),
    ("K_int32", {"K": TensorProto.INT32}, ["K", "tensor(int32)"]),
    ("B2_float16", {"B2": TensorProto.FLOAT16}, ["B2", "tensor(float16)"]),
])
def test_bad_dtypes_at_load(library, name, types, expected):
    """Declared input types: ONNX Runtime refuses the model when it loads it, naming the input
    ("Type 'tensor(double)' of input parameter (W1) of operator (DynamicLearners) ...")."""
    with pytest.raises(_LOAD_FAILURES) as info:
        make_session(library, make_model("gelu", types=types))
    if name == "B2_float16" and "no kernel def matches node inputs" in str(info.value):
        # a library built with CUDA also registers float16 kernels: ORT then refuses the mixed
        # types with its generic message, still at load time and without running anything
        assert "DynamicLearners" in str(info.value)
    else:
        for fragment in expected:
            assert fragment in str(info.value)
    good_run(make_session(library, make_model("gelu")), make_case((4, 6), 3, 13, 7, 5))


@pytest.mark.parametrize("attributes,expected", [
    ({"activation": "tanh"}, "activation 'tanh' is not one of gelu, gelu_tanh, relu, silu, identity"),
    ({}, "the string attribute 'activation' is required"),
])
def test_bad_attribute(library, attributes, expected):
    with pytest.raises(_LOAD_FAILURES) as info:
        make_session(library, make_model(attributes=attributes))
    assert expected in str(info.value)
    good_run(make_session(library, make_model("gelu")), make_case((4, 6), 3, 13, 7, 5))


def test_unknown_isa_is_an_error(library):
    with pytest.raises(_LOAD_FAILURES, match="ACMTOOL_CPU_ISA=sse9 is not available"):
        make_session(library, make_model("gelu"), isa="sse9")


# ------------------------------------------------------------------------------------------------
# Threads


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("weights_in_graph", [False, True])
def test_concurrent_runs_match_single_threaded(library, weights_in_graph, schedule):
    """8 threads x 50 runs on one session give, bit for bit, what one thread got."""
    n, din, h, dout = 4, 64, 48, 40
    base = make_case((300,), n, din, h, dout)
    initializers = {}
    if weights_in_graph:
        initializers = {name: base[name].numpy() for name in ("W1", "B1", "W2", "B2")}
    session = make_session(library, make_model("gelu", initializers=initializers), schedule=schedule)
    feeds = []
    for i in range(8):
        g = torch.Generator().manual_seed(100 + i)
        tokens = 37 + 41 * i  # every thread its own size and K
        case = dict(base, X=torch.randn(tokens, din, generator=g), K=torch.randint(0, n + 1, (tokens,), generator=g))
        feeds.append(feeds_of(case, skip=initializers))
    expected = [session.run(None, f)[0] for f in feeds]
    for f, y in zip(feeds, expected):
        case = {name: torch.from_numpy(v) for name, v in f.items()}
        case.update({name: torch.from_numpy(a) for name, a in initializers.items()})
        assert_matches(y, reference({**base, **case}, "gelu"))

    mismatches, errors = [], []
    barrier = threading.Barrier(8)

    def worker(i):
        try:
            barrier.wait()
            for _ in range(50):
                y = session.run(None, feeds[i])[0]
                if not np.array_equal(y, expected[i]):
                    mismatches.append(i)
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not mismatches, f"threads with results that differ from the single-threaded ones: {sorted(set(mismatches))}"
