"""The custom-op library's own record (AcmtoolOpsInfo) and the version checks built on it: an older
onnxruntime, a model of a newer op version, a library built by another acmtool. Also the torch-free
path a deployment uses: `import acmtool.runtime` and the ONNX header reader need neither torch nor onnx."""
import ctypes
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.errors import AcmInputError
from acmtool.runtime.library import check_onnxruntime, check_op_versions, library_info, stale_library_warning
from acmtool.runtime.model_header import read_header

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


@pytest.fixture(scope="module")
def library() -> str:
    from acmtool.runtime.build import BuildUnavailable, build_custom_ops
    try:
        return str(build_custom_ops())
    except BuildUnavailable as e:
        pytest.skip(f"cannot build custom_ops/: {e}")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, library):
    """A small BERT with ACM MLPs, exported with the custom op."""
    import transformers as T
    from acmtool.export import export_onnx
    torch.manual_seed(0)
    model = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)).eval()
    acmtool.acmize_(model, acmtool.AcmConfig())
    model.acmtool_info["source"] = {"kind": "hf", "class": "BertModel", "config": model.config.to_dict()}
    ids = torch.randint(0, 100, (2, 7))
    path = tmp_path_factory.mktemp("lib") / "bert.acm.onnx"
    export_onnx(model, path, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return path


def test_info_describes_this_build(library):
    info = library_info(library)
    assert info["acmtool"] == acmtool.__version__
    assert info["domain"] == "ai.acmtool" and info["ops"] == {"DynamicLearners": [1, 1]}
    assert info["onnxruntime_min"] == f"1.{info['ort_api']}"
    assert info["cpu_isa"] in info["cpu_isas"] and info["cpu_isas"][-1] == "generic"
    assert isinstance(info["cuda"], bool)
    check_onnxruntime(info, ort.__version__)  # the onnxruntime the tests run is new enough


def test_library_path_info_command(library, monkeypatch):
    monkeypatch.setenv("ACMTOOL_OPS_LIBRARY", library)
    r = CliRunner().invoke(cli, ["library-path", "--info"])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == library
    assert f"built by:       acmtool {acmtool.__version__}" in lines
    assert any(line.startswith("ORT API:") and "needs onnxruntime >= 1." in line for line in lines)
    assert f"onnxruntime:    {ort.__version__} here: ok" in lines
    assert "ops:            ai.acmtool: DynamicLearners v1" in lines
    assert any(line.startswith("CPU kernels:") and "this CPU uses" in line for line in lines)


@pytest.mark.parametrize("version,ok", [("1.20.1", False), ("1.28.0", False), ("1.29.0", True), ("1.32.0+cpu", True),
                                        ("2.0.0", True)])
def test_onnxruntime_version_check(version, ok):
    info = {"path": "/x/libacmtool_ops.so", "ort_api": 29, "onnxruntime_min": "1.29"}
    if ok:
        check_onnxruntime(info, version)
    else:
        with pytest.raises(AcmInputError, match=rf"needs onnxruntime >= 1.29 \(ORT API 29\); this is onnxruntime "
                                                 rf"{version}: pip install -U onnxruntime"):
            check_onnxruntime(info, version)


# An older ONNX Runtime hands the library an OrtApiBase whose GetApi(29) is NULL. The library must
# answer with a status that says why, built through API version 1 (whose first entry is CreateStatus),
# not crash. Both structs are faked here with ctypes callbacks.
_CreateStatus = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)
_GetApi = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)
_GetVersionString = ctypes.CFUNCTYPE(ctypes.c_char_p)


def test_an_older_onnxruntime_gets_a_message_not_a_crash(library):
    seen = []

    @_CreateStatus
    def create_status(code, message):
        seen.append((code, message.decode()))
        return 0xACE

    api1 = (ctypes.c_void_p * 1)(ctypes.cast(create_status, ctypes.c_void_p))

    @_GetApi
    def get_api(version):
        return ctypes.addressof(api1) if version == 1 else None

    @_GetVersionString
    def version_string():
        return b"1.20.1"

    class OrtApiBase(ctypes.Structure):
        _fields_ = [("GetApi", _GetApi), ("GetVersionString", _GetVersionString)]

    base = OrtApiBase(get_api, version_string)
    lib = ctypes.CDLL(library)
    lib.RegisterCustomOps.restype = ctypes.c_void_p
    lib.RegisterCustomOps.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    status = lib.RegisterCustomOps(None, ctypes.addressof(base))
    assert status == 0xACE
    (code, message), = seen
    assert code != 0  # ORT_FAIL
    api = library_info(library)["ort_api"]
    assert message == (f"libacmtool_ops needs ONNX Runtime API version {api} (onnxruntime >= 1.{api}); "
                       f"this is onnxruntime 1.20.1")


def test_a_model_of_a_newer_op_version_is_refused_by_name(exported, tmp_path):
    from acmtool.runtime import session
    proto = onnx.load(str(exported))
    for o in proto.opset_import:
        if o.domain == "ai.acmtool":
            o.version = 2
    meta = {p.key: p for p in proto.metadata_props}
    meta["acmtool.version"].value = "9.0.0"
    newer = tmp_path / "newer.acm.onnx"
    onnx.save(proto, str(newer))
    with pytest.raises(AcmInputError, match=r"uses ai.acmtool version 2 \(exported by acmtool 9.0.0\); this "
                                            r"custom-op library \(acmtool .*\) implements version 1 at most"):
        session(newer)
    assert session(exported).get_inputs()[0].name == "input_ids"  # the model as exported loads


def test_check_op_versions_passes_other_models():
    info = {"domain": "ai.acmtool", "ops": {"DynamicLearners": [1, 1]}, "acmtool": "0.1.0"}
    check_op_versions(info, {"": 18}, {}, "m.onnx")  # no custom op at all
    check_op_versions(info, {"": 18, "ai.acmtool": 1}, {}, "m.onnx")
    with pytest.raises(AcmInputError, match=r"version 2 \(exported by a newer acmtool\)"):
        check_op_versions(info, {"ai.acmtool": 2}, {}, "m.onnx")  # no acmtool.version recorded


def test_a_library_of_another_acmtool_is_named():
    assert stale_library_warning({"acmtool": acmtool.__version__, "path": "x"}) is None
    line = stale_library_warning({"acmtool": "0.0.9", "path": "/old/libacmtool_ops.so"})
    assert "built by acmtool 0.0.9" in line and "/old/libacmtool_ops.so" in line and "make build" in line


def test_a_library_without_info_is_explained(tmp_path):
    """A library from before the version checks (no AcmtoolOpsInfo): any shared object without it."""
    import _ctypes
    with pytest.raises(AcmInputError, match="no AcmtoolOpsInfo"):
        library_info(_ctypes.__file__)
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not a library")
    with pytest.raises(AcmInputError, match="cannot load the custom-op library"):
        library_info(str(junk))


def test_header_reader_matches_onnx(exported, tmp_path):
    header = read_header(exported)
    proto = onnx.load(str(exported), load_external_data=False)
    assert header.opsets == {o.domain: o.version for o in proto.opset_import}
    assert header.metadata == {p.key: p.value for p in proto.metadata_props}
    assert header.metadata["acmtool.version"] == acmtool.__version__
    for bad in (b"", b"\xff" * 40, exported.read_bytes()[:100]):
        p = tmp_path / "bad.onnx"
        p.write_bytes(bad)
        with pytest.raises(AcmInputError, match="not an ONNX model"):
            read_header(p)


def test_runtime_needs_neither_torch_nor_onnx(exported, library):
    """What a deployment with the wheel, onnxruntime and numpy does; torch and onnx are blocked."""
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
        "import json, numpy as np, acmtool, acmtool.runtime as rt\n"
        f"sess = rt.session({str(exported)!r})\n"
        "ids = np.arange(14, dtype=np.int64).reshape(2, 7) % 100\n"
        "y = sess.run(None, {'input_ids': ids, 'attention_mask': np.ones_like(ids)})[0]\n"
        "print(json.dumps({'shape': list(y.shape), 'sum': float(y.sum()), 'isa': rt.library_info()['cpu_isa']}))\n"
    )
    env = {**os.environ, "ACMTOOL_OPS_LIBRARY": library}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.splitlines()[-1])
    assert out["shape"] == [2, 7, 32]
    from acmtool.runtime import session
    ids = np.arange(14, dtype=np.int64).reshape(2, 7) % 100
    want = session(exported).run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert out["sum"] == pytest.approx(float(want.sum()), rel=1e-6)
