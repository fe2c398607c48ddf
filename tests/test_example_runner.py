"""custom_ops/examples/acmtool_run: the C++ runner (ONNX Runtime by dlopen, inputs and outputs as
.npy) on exported ACM models, against the PyTorch reference, and its error path.

The program is built with CMake into build/example_runner (build/example_runner_asan, with the
sanitizers, under `make test-asan`; missing cmake, compiler or ONNX Runtime headers skip with the
reason; a compile error fails). The custom-op library is
acmtool.runtime.library_path() (build/custom_ops, `make build`); libonnxruntime is the pip wheel's.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

import acmtool  # noqa: E402
from acmtool.errors import AcmInputError  # noqa: E402
from acmtool.export import export_onnx  # noqa: E402
from acmtool.export.onnx_export import MainOutput, use_impl  # noqa: E402
from acmtool.export.verify import k_tensors, replay  # noqa: E402
from acmtool.runtime.build import REPO_ROOT, BuildFailed, BuildUnavailable, _locked, _run  # noqa: E402

SOURCE = REPO_ROOT / "custom_ops" / "examples"
# Under `make test-asan` (custom_ops/tools/run_sanitized.sh sets ACMTOOL_SANITIZE=1) the program is
# built with the sanitizers too, into a folder of its own, and loads the sanitized library.
SANITIZE = os.environ.get("ACMTOOL_SANITIZE") == "1"
BUILD = REPO_ROOT / "build" / ("example_runner_asan" if SANITIZE else "example_runner")
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def runner() -> Path:
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    BUILD.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(BUILD / ".build.lock"):
            _run([cmake, "-S", str(SOURCE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release",
                  f"-DACMTOOL_SANITIZE={'ON' if SANITIZE else 'OFF'}"], "configure")
            _run([cmake, "--build", str(BUILD), "--config", "Release", "--parallel", "1"], "build")
    except BuildUnavailable as e:
        pytest.skip(f"cannot build custom_ops/examples: {e}")
    except BuildFailed as e:
        pytest.fail(str(e))
    exe = next((p for p in (BUILD / "acmtool_run", BUILD / "Release" / "acmtool_run") if p.is_file()), None)
    assert exe is not None, f"the build finished but acmtool_run is not in {BUILD}"
    return exe


@pytest.fixture(scope="module")
def ort_lib() -> str:
    found = sorted((Path(ort.__file__).parent / "capi").glob("libonnxruntime.so.1.*"))
    if not found:
        pytest.skip("the onnxruntime wheel carries no libonnxruntime.so.1.* (not Linux?)")
    return str(found[-1])


@pytest.fixture(scope="module")
def ops_lib() -> str:
    from acmtool.runtime import library_path
    try:
        return library_path()
    except AcmInputError as e:
        pytest.skip(f"custom-op library not built: {e}")


def run(exe, *args, env=None):
    proc = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=300, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def file_name(value: str) -> str:
    """What acmtool_run names the file of an output (FileNameFor in acmtool_run.cc)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", value) + ".npy"


def assert_one_line_error(rc, err, *fragments):
    assert rc == 2, (rc, err)  # 2, and not a signal (negative) or an uncaught exception
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("acmtool_run: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# ------------------------------------------------------------------------------------------------
# Whole models: ONNX Runtime in C++ against PyTorch replaying the k the exported gates chose


def _randomise_gates(model):
    """As tests/test_export.py: trained-looking gates, so that every k occurs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, m in acmtool.layers.acm_modules(model):
            m.gate.fc2.weight.copy_(torch.randn(m.gate.fc2.weight.shape, generator=g) * 2)
            m.gate.fc2.bias.zero_()
    return model.eval()


def _vit():
    from acmtool.io.sources import load_model
    loaded = load_model("timm:vit_tiny_patch16_224", model_kwargs=dict(img_size=32, patch_size=8, embed_dim=48,
                                                                        depth=2, num_heads=3, num_classes=7))
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(targets="mlp+attn"))
    example = torch.randn(2, 3, 32, 32)
    inputs = {"input": torch.randn(3, 3, 32, 32)}  # another batch size than the export's
    return _randomise_gates(loaded.model), example, inputs


def _bert():
    import transformers as T
    model = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=70, vocab_size=100)).eval()
    acmtool.acmize_(model, acmtool.AcmConfig(targets="mlp+attn"))
    ids = torch.randint(0, 100, (2, 9))
    example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    ids = torch.randint(0, 100, (3, 6))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0  # padding in the first sequence
    return _randomise_gates(model), example, {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("build,threads", [(_vit, 1), (_bert, 2)], ids=["timm-vit", "hf-bert"])
def test_runner_matches_pytorch(tmp_path, runner, ort_lib, ops_lib, build, threads):
    model, example, inputs = build()
    acms = dict(acmtool.layers.acm_modules(model))
    path = export_onnx(model, tmp_path / "model.onnx", example, "custom-op")

    # As `acmtool verify` does: the K each DynamicLearners node consumes becomes a graph output too,
    # so that the reference can replay the k that ONNX Runtime's gates chose (a near tie between two
    # logits may go either way in two runtimes; replay measures the kernels, not that).
    proto = onnx.load(str(path))
    ks = k_tensors(proto, list(acms))
    assert len(ks) == len(acms) and not any(add for _, add in ks.values())
    for value, _ in ks.values():
        proto.graph.output.append(helper.make_empty_tensor_value_info(value))
    probe = tmp_path / "probe.onnx"
    onnx.save(proto, str(probe))

    args = []
    for name, tensor in inputs.items():
        np.save(tmp_path / f"{name}.npy", tensor.numpy())
        args.append(f"{name}={tmp_path / f'{name}.npy'}")
    out = tmp_path / "out"
    rc, stdout, err = run(runner, "--model", probe, "--ops-lib", ops_lib, "--ort-lib", ort_lib,
                          "--threads", threads, "--out-dir", out, *args)
    assert rc == 0 and err == "", (rc, err)
    assert f"-> {out / 'output.npy'}" in stdout

    got = np.load(out / "output.npy")
    k_ort = {name: np.load(out / file_name(value)) for name, (value, _) in ks.items()}
    for name, k in k_ort.items():
        assert k.dtype == np.int64 and 0 <= k.min() and k.max() <= acms[name].num_learners, name
    assert any(len(np.unique(k)) > 1 for k in k_ort.values()), "the gates should pick mixed k"

    wrapped = MainOutput(model).eval()
    with torch.no_grad(), use_impl(model, "naive"):
        with replay(model, {name: torch.from_numpy(k) for name, k in k_ort.items()}):
            ref = wrapped(**inputs) if len(inputs) > 1 else wrapped(*inputs.values())
    assert got.dtype == np.float32 and got.shape == tuple(ref.shape)
    diff = float(np.abs(got - ref.numpy()).max())
    print(f"{build.__name__}: max abs diff acmtool_run vs PyTorch (replayed k) = {diff:.3g}")
    assert diff <= TOLERANCE

    # The plain export (no K outputs) gives the same output, so the probe changed nothing.
    rc, _, err = run(runner, "--model", path, "--ops-lib", ops_lib, "--ort-lib", ort_lib, "--threads", threads,
                     "--out-dir", tmp_path / "plain", *args)
    assert rc == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "plain" / "output.npy"), got, rtol=0, atol=1e-5)


def test_runner_takes_the_optional_budget_input(tmp_path, runner, ort_lib, ops_lib):
    # a model with the run-time budget knob: `budget` may be given (budget=FILE.npy) or left out
    model, example, inputs = _vit()
    model.acmtool_info.update(budget=0.5, budget_table={"budgets": [0.1, 0.5, 1.0], "shifts": [1.5, 0.0, -1.5]})
    path = export_onnx(model, tmp_path / "knob.onnx", example, "custom-op")
    np.save(tmp_path / "x.npy", inputs["input"].numpy())
    outs = {}
    for b in (None, 0.1, 1.0):
        extra = []
        if b is not None:
            np.save(tmp_path / "b.npy", np.array(b, np.float32))
            extra = [f"budget={tmp_path / 'b.npy'}"]
        rc, _, err = run(runner, "--model", path, "--ops-lib", ops_lib, "--ort-lib", ort_lib, "--out-dir",
                         tmp_path / str(b), f"input={tmp_path / 'x.npy'}", *extra)
        assert rc == 0, err
        outs[b] = np.load(tmp_path / str(b) / "output.npy")
        with torch.no_grad(), acmtool.at_budget(model, b):
            ref = MainOutput(model).eval()(inputs["input"]).numpy()
        np.testing.assert_allclose(outs[b], ref, rtol=0, atol=TOLERANCE)
    assert np.abs(outs[0.1] - outs[1.0]).max() > 1e-3  # the budget changed what ran
    np.save(tmp_path / "b64.npy", np.array(0.5, np.float64))
    rc, _, err = run(runner, "--model", path, "--ops-lib", ops_lib, "--ort-lib", ort_lib, "--out-dir", tmp_path,
                     f"input={tmp_path / 'x.npy'}", f"budget={tmp_path / 'b64.npy'}")
    assert rc == 2 and "input 'budget' is float32 but" in err, err
    rc, _, err = run(runner, "--model", path, "--ops-lib", ops_lib, "--ort-lib", ort_lib, "--out-dir", tmp_path,
                     f"input={tmp_path / 'x.npy'}", f"bugdet={tmp_path / 'b.npy'}")
    assert rc == 2 and "(its inputs: input; optional: budget)" in err, err


# ------------------------------------------------------------------------------------------------
# .npy in and out, without the custom-op library (a model that needs none)


def _identity_model(path, types):
    nodes = [helper.make_node("Identity", [f"in{i}"], [f"out/{i}"]) for i in range(len(types))]
    graph = helper.make_graph(nodes, "identity",
                              [helper.make_tensor_value_info(f"in{i}", t, None) for i, t in enumerate(types)],
                              [helper.make_tensor_value_info(f"out/{i}", t, None) for i, t in enumerate(types)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_npy_types_round_trip(tmp_path, runner, ort_lib):
    arrays = [np.arange(6, dtype=np.float16).reshape(2, 3) / 3, np.float64(2.5), np.zeros((0, 4), bool),
              np.arange(-3, 3, dtype=np.int32), np.arange(250, 256, dtype=np.uint8).reshape(1, 2, 3),
              np.arange(12, dtype=np.int64).reshape(3, 4), np.linspace(-1, 1, 5, dtype=np.float32)]
    types = [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BOOL, TensorProto.INT32, TensorProto.UINT8,
             TensorProto.INT64, TensorProto.FLOAT]
    _identity_model(tmp_path / "id.onnx", types)
    args = []
    for i, a in enumerate(arrays):
        with open(tmp_path / f"{i}.npy", "wb") as f:  # format 1.0, and 2.0 for one of them
            np.lib.format.write_array(f, a, version=(2, 0) if i == 5 else (1, 0))
        args.append(f"in{i}={tmp_path / f'{i}.npy'}")
    # No --ops-lib (this model needs no custom op) and the library from ORT_LIB.
    rc, _, err = run(runner, "--model", tmp_path / "id.onnx", "--out-dir", tmp_path / "out", *args,
                     env={"ORT_LIB": ort_lib, "PATH": "/usr/bin:/bin"})
    assert rc == 0 and err == "", err
    for i, a in enumerate(arrays):
        back = np.load(tmp_path / "out" / f"out_{i}.npy")  # '/' in an output name becomes '_'
        assert back.dtype == a.dtype and back.shape == a.shape, i
        np.testing.assert_array_equal(back, a)


# ------------------------------------------------------------------------------------------------
# Errors: one line on stderr, exit status 2


def _one_node_model(path):
    """X [T, 4] -> DynamicLearners with N = 2 learners (weights as inputs) -> Y [T, 3]."""
    node = helper.make_node("DynamicLearners", ["X", "K", "W1", "", "W2", ""], ["Y"], domain="ai.acmtool",
                            activation="relu")
    graph = helper.make_graph([node], "one_node", [
        helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 4]),
        helper.make_tensor_value_info("K", TensorProto.INT64, ["T"]),
        helper.make_tensor_value_info("W1", TensorProto.FLOAT, [2, 4, 5]),
        helper.make_tensor_value_info("W2", TensorProto.FLOAT, [2, 5, 3]),
    ], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("ai.acmtool", 1)]), str(path))
    g = np.random.default_rng(0)
    arrays = {"X": g.standard_normal((3, 4), dtype=np.float32), "K": np.array([0, 1, 2], np.int64),
              "W1": g.standard_normal((2, 4, 5), dtype=np.float32),
              "W2": g.standard_normal((2, 5, 3), dtype=np.float32)}
    for name, a in arrays.items():
        np.save(path.parent / f"{name}.npy", a)
    return arrays, {name: f"{name}={path.parent / f'{name}.npy'}" for name in arrays}


def test_one_node_graph_and_k_out_of_range(tmp_path, runner, ort_lib, ops_lib):
    arrays, args = _one_node_model(tmp_path / "one.onnx")
    common = ("--model", tmp_path / "one.onnx", "--ort-lib", ort_lib, "--out-dir", tmp_path / "out")
    rc, _, err = run(runner, *common, "--ops-lib", ops_lib, *args.values())
    assert rc == 0, err
    x, k, w1, w2 = arrays["X"], arrays["K"], arrays["W1"], arrays["W2"]
    want = np.stack([sum((np.maximum(x[t] @ w1[i], 0) @ w2[i] for i in range(k[t])), np.zeros(3, np.float32))
                     for t in range(3)])
    np.testing.assert_allclose(np.load(tmp_path / "out" / "Y.npy"), want, rtol=1e-5, atol=1e-5)

    np.save(tmp_path / "K.npy", np.array([0, 3, 1], np.int64))  # N = 2
    rc, _, err = run(runner, *common, "--ops-lib", ops_lib, *args.values())
    assert_one_line_error(rc, err, "ONNX Runtime: ", "K must lie in [0, 2]")

    rc, _, err = run(runner, *common, *args.values())  # no --ops-lib
    assert_one_line_error(rc, err, "ai.acmtool", "--ops-lib")


def _fortran(path):
    np.save(path, np.asfortranarray(np.ones((2, 4), np.float32)))


def _complex(path):
    np.save(path, np.ones((2, 4), np.complex64))


def _truncated(path):
    np.save(path, np.ones((2, 4), np.float32))
    path.write_bytes(path.read_bytes()[:-4])


def _not_npy(path):
    path.write_text("X,1,2,3\n")


@pytest.mark.parametrize("make,fragment", [
    (None, "no such file"),
    (_fortran, "Fortran-order"),
    (_complex, "unsupported dtype '<c8'"),
    (_truncated, "truncated"),
    (_not_npy, "not a .npy file"),
], ids=["missing", "fortran", "complex", "truncated", "not-npy"])
def test_bad_input_file(tmp_path, runner, ort_lib, ops_lib, make, fragment):
    _, args = _one_node_model(tmp_path / "one.onnx")
    bad = tmp_path / "bad.npy"
    if make:
        make(bad)
    args["X"] = f"X={bad}"
    rc, _, err = run(runner, "--model", tmp_path / "one.onnx", "--ops-lib", ops_lib, "--ort-lib", ort_lib,
                     "--out-dir", tmp_path / "out", *args.values())
    assert_one_line_error(rc, err, str(bad), fragment)
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path, runner, ort_lib, ops_lib):
    _, args = _one_node_model(tmp_path / "one.onnx")
    model = ("--model", tmp_path / "one.onnx", "--ops-lib", ops_lib, "--ort-lib", ort_lib)
    cases = [
        ((*model, *list(args.values())[1:]), "input 'X' is not given"),
        ((*model, *args.values(), f"Z={tmp_path / 'X.npy'}"), "no input 'Z'"),
        ((*model, args["X"], f"K={tmp_path / 'X.npy'}", args["W1"], args["W2"]), "'K' is int64 but"),
        (("--model", tmp_path / "nope.onnx", "--ort-lib", ort_lib), "no such model file"),
        ((*model[:4], "--ort-lib", tmp_path / "nope.so", *args.values()), "cannot load ONNX Runtime"),
        ((*model, "--threads", "two", *args.values()), "--threads"),
        ((*model, "X.npy"), "NAME=FILE.npy"),
        (("--ort-lib", ort_lib,), "--model is required"),
    ]
    for argv, fragment in cases:
        rc, _, err = run(runner, *argv)
        assert_one_line_error(rc, err, fragment)
