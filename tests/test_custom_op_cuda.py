"""The CUDA kernel of ai.acmtool::DynamicLearners (custom_ops/cuda/).

Three kinds of tests:

* here, on any machine with nvcc and the cuBLAS headers: the library builds with -DACMTOOL_CUDA=ON
  (into build/custom_ops_cuda), links neither libonnxruntime nor libcudart/libcublas dynamically,
  still loads in a CPU-only onnxruntime and runs the CPU kernel there, every kernel launch names
  its stream, and the standalone launcher test program skips cleanly (exit 77) without a GPU;
* with a GPU: the standalone program's own tests (launchers against a CPU reference);
* with a GPU and onnxruntime-gpu: one-node graphs on the CUDAExecutionProvider (CPU fallback
  disabled, so the CUDA kernel is what runs) against `dynamic_learners_reference`, output by output,
  in float32, float16 and bfloat16, and the bad inputs.

Without nvcc or the cuBLAS headers the build tests skip with the reason; without a GPU or
onnxruntime-gpu the GPU tests skip with "no CUDA device: ..." / "no onnxruntime-gpu: ...".
ACMTOOL_OPS_LIBRARY names a prebuilt CUDA library instead of building one (benchmarks/gpu_check.sh
sets it); ACMTOOL_BUILD_JOBS caps the build's parallel jobs.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from acmtool.ops.activations import ACTIVATIONS
from acmtool.ops.dynamic_learners import dynamic_learners_reference
from acmtool.runtime.build import REPO_ROOT, BuildFailed, BuildUnavailable, build_custom_ops, library_filename

CUDA_BUILD_DIR = REPO_ROOT / "build" / "custom_ops_cuda"
TEST_PROGRAM = "test_dynamic_learners_cuda"
SKIP_EXIT = 77  # the test program's "no CUDA device / no cuBLASLt"
DOMAIN = "ai.acmtool"
INPUTS = ("X", "K", "W1", "B1", "W2", "B2")
CUDA_SOURCES = REPO_ROOT / "custom_ops" / "cuda"
# What cuda.cmake says when ACMTOOL_CUDA=ON cannot be honoured for want of a tool (a reason to skip);
# any other configure or compile error fails the test.
_MISSING_TOOLCHAIN = re.compile(r"ACMTOOL_CUDA=ON but ((?:nvcc was not found|the cuBLAS headers).*?)\n(?:Call Stack|\s*\n)",
                                re.S)


# ------------------------------------------------------------------------------------------------
# The build (runs here)


@pytest.fixture(scope="module")
def cuda_build() -> Path:
    """build/custom_ops_cuda with the CUDA kernel (incremental: seconds once built)."""
    prebuilt = os.environ.get("ACMTOOL_OPS_LIBRARY")
    if prebuilt:
        path = Path(prebuilt)
        assert path.is_file(), f"ACMTOOL_OPS_LIBRARY={prebuilt} does not exist"
        return path.parent
    jobs = int(os.environ.get("ACMTOOL_BUILD_JOBS", "0")) or None
    try:
        build_custom_ops(CUDA_BUILD_DIR, cmake_args=["-DACMTOOL_CUDA=ON"], jobs=jobs)
    except BuildUnavailable as e:
        pytest.skip(f"cannot build custom_ops/: {e}")
    except BuildFailed as e:
        missing = _MISSING_TOOLCHAIN.search(str(e))
        if missing:
            pytest.skip("no CUDA toolchain: " + " ".join(missing.group(1).split()))
        raise
    return CUDA_BUILD_DIR


def cuda_library(build_dir: Path) -> str:
    library = os.environ.get("ACMTOOL_OPS_LIBRARY") or str(build_dir / library_filename())
    assert b"CUDAExecutionProvider" in Path(library).read_bytes(), (
        f"{library} has no CUDA kernel (built with ACMTOOL_CUDA=OFF, or AUTO without nvcc?)")
    return library


def needed_libraries(path: Path) -> list[str]:
    readelf = shutil.which("readelf")
    if readelf is None:
        pytest.skip("readelf (binutils) is not installed")
    out = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def test_cuda_build_compiles(cuda_build):
    """The library and the standalone test program build with -DACMTOOL_CUDA=ON; the library needs
    nothing from ONNX Runtime or CUDA at load time (static cudart, cuBLASLt loaded on first use)."""
    library = Path(cuda_library(cuda_build))
    needed = needed_libraries(library)
    for forbidden in ("libonnxruntime", "libcudart", "libcublas", "libcuda."):
        assert not any(name.startswith(forbidden) for name in needed), f"{library.name} links {needed}"
    if not os.environ.get("ACMTOOL_OPS_LIBRARY"):
        program = cuda_build / TEST_PROGRAM
        assert program.is_file() and os.access(program, os.X_OK), f"{program} was not built"
    codes = fatbin_codes(library)
    assert ("ELF", 90) in codes, f"no sm_90 code for the H100/H200 in {library.name}: {codes}"
    assert any(kind == "PTX" for kind, _ in codes), f"no PTX for other GPUs in {library.name}: {codes}"


def fatbin_codes(library: Path) -> list[tuple[str, int]]:
    """(kind, architecture) of every image in the library's CUDA fat binary: ("ELF", 90) is sm_90
    machine code, ("PTX", 75) compute_75 PTX that the driver compiles for newer GPUs."""
    import struct
    import tempfile

    objcopy = shutil.which("objcopy")
    if objcopy is None:
        pytest.skip("objcopy (binutils) is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        section = Path(tmp) / "fatbin"
        subprocess.run([objcopy, "-O", "binary", "--only-section=.nv_fatbin", str(library), str(section)], check=True)
        data = section.read_bytes()
    codes, offset = [], 0
    while offset + 16 <= len(data):
        magic, _, header, size = struct.unpack_from("<IHHQ", data, offset)
        if magic != 0xBA55ED50:  # fatbin header magic; headers are 8-byte aligned
            offset += 8
            continue
        entry, end = offset + header, offset + header + size
        while entry < end:
            kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            codes.append(({1: "PTX", 2: "ELF"}.get(kind, str(kind)), arch))
            entry += entry_header + entry_size
        offset = end
    return codes


def split_arguments(text: str) -> list[str]:
    """`a, f(b, c), d` -> ['a', 'f(b, c)', 'd']: commas outside brackets only."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def call_arguments(source: str, function: str) -> list[list[str]]:
    """The argument lists of every call of `function` in `source`."""
    calls = []
    for match in re.finditer(re.escape(function) + r"\s*\(", source):
        depth, i = 1, match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(source[i], 0)
            i += 1
        calls.append(split_arguments(source[match.end():i - 1]))
    return calls


def test_every_launch_names_a_stream():
    """The kernels run on the stream they are given (ONNX Runtime's), never the default stream:
    every launch has the 4-argument configuration ending in the stream, copies, memsets and event
    records are the async kind on that stream, and nothing synchronizes the whole device."""
    sources = list(CUDA_SOURCES.glob("*.cu")) + list(CUDA_SOURCES.glob("*.cc"))
    assert any(p.name == "dynamic_learners_cuda_impl.cu" for p in sources)
    launches = 0
    for path in sources:
        source = path.read_text()
        for config in re.findall(r"<<<(.*?)>>>", source, re.S):
            parts = split_arguments(config)
            assert len(parts) == 4 and parts[3] == "stream", f"{path.name}: launch <<<{config}>>> not on the stream"
            launches += 1
        for call in ("cudaMemcpy(", "cudaMemset(", "cudaDeviceSynchronize(", "cudaStreamPerThread", "cudaMalloc(",
                     "cudaStreamLegacy"):
            assert call not in source, f"{path.name} calls {call}"
        for function in ("cudaMemcpyAsync", "cudaMemsetAsync", "cudaEventRecord"):
            for args in call_arguments(source, function):
                assert args[-1] == "stream", f"{path.name}: {function}({', '.join(args)}) not on the stream"
    assert launches >= 8


def test_cuda_library_runs_the_cpu_kernel(cuda_build):
    """The CUDA build loads in a CPU-only onnxruntime (no GPU, no CUDA libraries needed) and its CPU
    kernel still matches the reference."""
    ort = pytest.importorskip("onnxruntime")
    library = cuda_library(cuda_build)
    for lead, n, din, h, dout, k in [((3, 7), 4, 13, 7, 5, "mixed"), ((1,), 3, 13, 7, 5, "full"), ((0,), 3, 13, 7, 5, "mixed"),
                                     ((4,), 0, 13, 7, 5, "zero"), ((201,), 4, 300, 45, 37, "mixed")]:
        case = make_case(lead, n, din, h, dout, k=k)
        session = make_session(ort, library, make_model("gelu", "float32"), providers=["CPUExecutionProvider"])
        y = session.run(None, feeds_of(case, "float32"))[0]
        assert_matches(y, reference(case, "gelu", "float32"), "float32")


def test_standalone_program_skips_or_passes(cuda_build):
    """Without a GPU the launcher test says why and exits 77; with one, its tests must all pass."""
    if os.environ.get("ACMTOOL_OPS_LIBRARY"):
        pytest.skip("a prebuilt library was named; gpu_check.sh runs the launcher test itself")
    proc = subprocess.run([str(cuda_build / TEST_PROGRAM)], capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    if proc.returncode == SKIP_EXIT:
        assert "SKIP:" in output
        pytest.skip(output.strip().splitlines()[-1].replace("SKIP: ", ""))
    assert proc.returncode == 0, output[-4000:]


@pytest.mark.parametrize("args", [["--bench", "--hidden", "3000", "--learners", "7"], ["--no-such-flag"],
                                  ["--bench", "--dtypes", "fp8"], ["--bench", "--iters"]])
def test_standalone_program_rejects_bad_arguments(cuda_build, args):
    """Argument errors are found before the device is touched (exit 2), so they show here too."""
    if os.environ.get("ACMTOOL_OPS_LIBRARY"):
        pytest.skip("a prebuilt library was named")
    proc = subprocess.run([str(cuda_build / TEST_PROGRAM), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------------
# Through onnxruntime-gpu (needs a GPU)

ELEM = {"float32": 1, "float16": 10, "bfloat16": 16}  # onnx.TensorProto
TORCH_DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DTYPES = tuple(ELEM)


@pytest.fixture(scope="module")
def ort_gpu():
    if not torch.cuda.is_available():
        pytest.skip(f"no CUDA device: torch {torch.__version__} sees none (torch.cuda.is_available() is False)")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        pytest.skip(f"no onnxruntime-gpu: onnxruntime {ort.__version__} has {providers}")
    return ort


@pytest.fixture(scope="module")
def gpu_library(ort_gpu, cuda_build) -> str:
    return cuda_library(cuda_build)


def make_model(activation, dtype, *, b1=True, b2=True, types=None, attributes=None):
    from onnx import TensorProto, helper

    types = types or {}
    present = {"X": True, "K": True, "W1": True, "B1": b1, "W2": True, "B2": b2}
    node_inputs = [name if present[name] else "" for name in INPUTS]
    attrs = {"activation": activation} if attributes is None else attributes
    node = helper.make_node("DynamicLearners", node_inputs, ["Y"], domain=DOMAIN, **attrs)
    graph_inputs = []
    for name in INPUTS:
        if present[name]:
            elem = types.get(name, TensorProto.INT64 if name == "K" else ELEM[dtype])
            graph_inputs.append(helper.make_tensor_value_info(name, elem, None))
    y_type = types.get("X", ELEM[dtype])
    graph = helper.make_graph([node], "dynamic_learners", graph_inputs, [helper.make_tensor_value_info("Y", y_type, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])


_SESSIONS: dict = {}  # CUDA sessions by (library, model): creating one costs far more than a run


def make_session(ort, library, model, *, providers=("CUDAExecutionProvider",)):
    key = (library, model.SerializeToString(), tuple(providers))
    if "CUDAExecutionProvider" in providers and key in _SESSIONS:
        return _SESSIONS[key]
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    if "CUDAExecutionProvider" in providers:
        # Fail rather than quietly run the node on the CPU kernel.
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    session = ort.InferenceSession(model.SerializeToString(), options, providers=list(providers))
    if "CUDAExecutionProvider" in providers:
        _SESSIONS[key] = session
    return session


def make_case(lead, n, din, h, dout, *, b1=True, b2=True, k="mixed", seed=0, dtype="float32"):
    """Inputs as float32 tensors holding values that `dtype` represents exactly."""
    g = torch.Generator().manual_seed(seed)
    cast = lambda t: t.to(TORCH_DTYPE[dtype]).float()  # noqa: E731
    case = {
        "X": cast(torch.randn(*lead, din, generator=g)),
        "W1": cast(torch.randn(n, din, h, generator=g) / max(din, 1) ** 0.5),
        "B1": cast(torch.randn(n, h, generator=g)) if b1 else None,
        "W2": cast(torch.randn(n, h, dout, generator=g) / max(h, 1) ** 0.5),
        "B2": cast(torch.randn(dout, generator=g)) if b2 else None,
    }
    if k == "zero":
        case["K"] = torch.zeros(lead, dtype=torch.int64)
    elif k == "full":
        case["K"] = torch.full(lead, n, dtype=torch.int64)
    elif k == "one":
        case["K"] = torch.full(lead, max(1, n // 2) if n else 0, dtype=torch.int64)
    else:
        case["K"] = torch.randint(0, n + 1, lead, generator=g)
    return case


def ort_value(ort, tensor, dtype):
    if tensor.dtype == torch.int64:
        return ort.OrtValue.ortvalue_from_numpy(tensor.numpy())
    if dtype == "bfloat16":
        bits = tensor.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(np.ascontiguousarray(bits), ELEM["bfloat16"])
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(tensor.to(TORCH_DTYPE[dtype]).numpy()))


def feeds_of(case, dtype):
    return {name: t.to(TORCH_DTYPE[dtype]).numpy() if t.dtype != torch.int64 else t.numpy()
            for name, t in case.items() if t is not None}


def run_gpu(ort, session, case, dtype, out_shape):
    """Inputs as OrtValues (bfloat16 as raw bits), the output into a host buffer of `dtype`."""
    binding = session.io_binding()
    for name, t in case.items():
        if t is not None:
            binding.bind_ortvalue_input(name, ort_value(ort, t, dtype))
    out = np.empty(out_shape, dtype=np.uint16 if dtype == "bfloat16" else np.dtype(dtype))
    binding.bind_output("Y", "cpu", 0, ELEM[dtype], list(out_shape), out.ctypes.data)
    session.run_with_iobinding(binding)
    if dtype == "bfloat16":
        return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16).float().numpy()
    return out.astype(np.float32)


def reference(case, activation, dtype):
    return dynamic_learners_reference(case["X"], case["K"], case["W1"], case["B1"], case["W2"], case["B2"],
                                      activation).numpy()


# Tolerances: the kernel rounds H and Y to the op's type (fp32 accumulation), the reference does not.
TOLERANCE = {"float32": (1e-4, 2e-5), "float16": (1e-2, 1e-2), "bfloat16": (5e-2, 6e-2)}


def assert_matches(y, ref, dtype):
    assert y.shape == ref.shape
    rtol, atol = TOLERANCE[dtype]
    scale = max(1.0, float(np.abs(ref).max())) if ref.size else 1.0
    np.testing.assert_allclose(y, ref, rtol=rtol, atol=atol * scale)


def run_case(ort, library, case, activation="gelu", dtype="float32"):
    model = make_model(activation, dtype, b1=case["B1"] is not None, b2=case["B2"] is not None)
    session = make_session(ort, library, model)
    lead = tuple(case["K"].shape)
    y = run_gpu(ort, session, case, dtype, (*lead, case["W2"].shape[2]))
    assert_matches(y, reference(case, activation, dtype), dtype)
    return y


SHAPES = {  # (X's leading shape, N, Din, h, Dout): test_custom_op_cpu's, and a few of CUDA's own
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
    "blocks": ((3, 67), 4, 300, 45, 37),
    "wide_hidden": ((131,), 3, 40, 260, 33),
    "vit_like_small": ((2, 50), 4, 96, 96, 96),
    "aligned_many_tokens": ((8, 197), 4, 64, 64, 64),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", ["mixed", "zero", "full", "one"])
@pytest.mark.parametrize("name", list(SHAPES))
def test_shapes_and_k(gpu_library, ort_gpu, name, k, dtype):
    lead, n, din, h, dout = SHAPES[name]
    case = make_case(lead, n, din, h, dout, k=k, seed=sum(map(ord, name)), dtype=dtype)
    run_case(ort_gpu, gpu_library, case, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("b1,b2", [(True, True), (True, False), (False, True), (False, False)])
def test_activations_and_biases(gpu_library, ort_gpu, activation, b1, b2, dtype):
    run_case(ort_gpu, gpu_library, make_case((5, 23), 4, 29, 19, 17, b1=b1, b2=b2, dtype=dtype), activation, dtype)
    run_case(ort_gpu, gpu_library, make_case((300,), 4, 64, 128, 64, b1=b1, b2=b2, dtype=dtype), activation, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_far_range(gpu_library, ort_gpu, activation, dtype):
    case = make_case((64,), 2, 8, 40, 6, dtype=dtype)
    case["X"] = (case["X"] * 30).to(TORCH_DTYPE[dtype]).float()
    run_case(ort_gpu, gpu_library, case, activation, dtype)


@pytest.mark.parametrize("lead", [(), (6,), (2, 5), (2, 3, 4)])
def test_one_session_many_shapes(gpu_library, ort_gpu, lead):
    session = make_session(ort_gpu, gpu_library, make_model("gelu", "float16"))
    for extra in range(3):
        shape = tuple(d + extra for d in lead)
        case = make_case(shape, 3, 13, 7, 5, seed=extra, dtype="float16")
        y = run_gpu(ort_gpu, session, case, "float16", (*shape, 5))
        assert_matches(y, reference(case, "gelu", "float16"), "float16")


# Bad inputs: an ORT error that names the problem (the shared checks of op_definition.cc: the CPU
# kernel's words); the session keeps working. Keep in step with test_custom_op_cpu.BAD_RUNS.
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


def failures(ort):
    state = ort.capi.onnxruntime_pybind11_state
    return state.Fail, state.InvalidArgument


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("name", list(BAD_RUNS))
def test_bad_inputs_at_run(gpu_library, ort_gpu, name, dtype):
    change, expected = BAD_RUNS[name]
    session = make_session(ort_gpu, gpu_library, make_model("gelu", dtype))
    bad = change(make_case((4, 6), 3, 13, 7, 5, dtype=dtype))
    with pytest.raises(failures(ort_gpu)) as info:
        session.run(None, feeds_of(bad, dtype))
    message = str(info.value)
    assert "DynamicLearners" in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    good = make_case((4, 6), 3, 13, 7, 5, dtype=dtype)
    assert_matches(run_gpu(ort_gpu, session, good, dtype, (4, 6, 5)), reference(good, "gelu", dtype), dtype)


@pytest.mark.parametrize("x_type,name", [("float16", "float16"), ("float64", "float64")])
def test_x_of_another_type(gpu_library, ort_gpu, x_type, name):
    """X is dynamically typed: the float32 CUDA kernel runs and names the mismatch."""
    from onnx import TensorProto

    elem = {"float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE}[x_type]
    session = make_session(ort_gpu, gpu_library, make_model("gelu", "float32", types={"X": elem}))
    feeds = feeds_of(make_case((4, 6), 3, 13, 7, 5), "float32")
    feeds["X"] = feeds["X"].astype(x_type)
    expected = (f"DynamicLearners: W1 is float32 but X is {name}" if x_type == "float16" else
                "DynamicLearners: X is float64; the CUDA kernel computes float32, float16 and bfloat16")
    with pytest.raises(failures(ort_gpu), match=re.escape(expected)):
        session.run(None, feeds)


def test_mixed_weight_types_refused_at_load(gpu_library, ort_gpu):
    """W1 float16 beside a float32 W2: no kernel of the op takes that, and ONNX Runtime refuses the
    model when it loads it (its message names the op, not the input: see custom_ops/README.md)."""
    from onnx import TensorProto

    state = ort_gpu.capi.onnxruntime_pybind11_state
    with pytest.raises((state.Fail, state.InvalidGraph, state.InvalidArgument, state.RuntimeException)) as info:
        make_session(ort_gpu, gpu_library, make_model("gelu", "float32", types={"W1": TensorProto.FLOAT16}))
    assert "DynamicLearners" in str(info.value)


@pytest.mark.parametrize("attributes,expected", [
    ({"activation": "tanh"}, "activation 'tanh' is not one of gelu, gelu_tanh, relu, silu, identity"),
    ({}, "the string attribute 'activation' is required"),
])
def test_bad_attribute(gpu_library, ort_gpu, attributes, expected):
    state = ort_gpu.capi.onnxruntime_pybind11_state
    with pytest.raises((state.Fail, state.InvalidArgument, state.RuntimeException, state.InvalidGraph)) as info:
        make_session(ort_gpu, gpu_library, make_model("gelu", "float16", attributes=attributes))
    assert expected in str(info.value)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_concurrent_runs_match_single_threaded(gpu_library, ort_gpu, dtype):
    """6 threads x 20 runs on one session give what one thread got (per-thread events and pinned
    buffers, the shared cuBLASLt handle)."""
    session = make_session(ort_gpu, gpu_library, make_model("gelu", dtype))
    cases = [make_case((37 + 41 * i,), 4, 64, 48, 40, seed=100 + i, dtype=dtype) for i in range(6)]
    expected = [run_gpu(ort_gpu, session, c, dtype, (37 + 41 * i, 40)) for i, c in enumerate(cases)]
    for c, y in zip(cases, expected):
        assert_matches(y, reference(c, "gelu", dtype), dtype)
    mismatches, errors = [], []
    barrier = threading.Barrier(len(cases))

    def worker(i):
        try:
            barrier.wait()
            for _ in range(20):
                if not np.array_equal(run_gpu(ort_gpu, session, cases[i], dtype, expected[i].shape), expected[i]):
                    mismatches.append(i)
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert not mismatches, f"threads whose results differ from the single-threaded ones: {sorted(set(mismatches))}"
