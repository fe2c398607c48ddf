"""acmtool.runtime: importable without onnxruntime or the library; clear errors when they are needed."""
import os
import subprocess
import sys

import pytest

from acmtool.errors import AcmInputError


def test_import_acmtool_without_onnxruntime_or_library(tmp_path):
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"  # as if it were not installed
        "import acmtool, acmtool.runtime\n"
        "from acmtool.errors import AcmInputError\n"
        "try:\n"
        "    acmtool.runtime.library_path()\n"
        "except AcmInputError as e:\n"
        "    print('LIB:', e)\n"
        "from acmtool.runtime.session import import_onnxruntime\n"
        "try:\n"
        "    import_onnxruntime()\n"
        "except AcmInputError as e:\n"
        "    print('ORT:', e)\n"
    )
    env = {**os.environ, "ACMTOOL_OPS_LIBRARY": str(tmp_path / "missing.so")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "LIB: the acmtool custom-op library is not built" in p.stdout and "make build" in p.stdout
    assert "ORT: running ONNX models needs onnxruntime: pip install onnxruntime" in p.stdout


def test_library_path_env_override(tmp_path, monkeypatch):
    from acmtool.runtime import library_path
    monkeypatch.setenv("ACMTOOL_OPS_LIBRARY", str(tmp_path / "nope.so"))
    with pytest.raises(AcmInputError, match="not built"):
        library_path()
    fake = tmp_path / "lib.so"
    fake.write_bytes(b"x")
    monkeypatch.setenv("ACMTOOL_OPS_LIBRARY", str(fake))
    assert library_path() == str(fake)


def test_session_refuses_missing_provider(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper
    from acmtool.runtime import session
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    assert session(path).get_providers()[0] == "CPUExecutionProvider"  # no custom domain: no library needed
    with pytest.raises(AcmInputError, match="NoSuchExecutionProvider is not available"):
        session(path, providers=["NoSuchExecutionProvider"])
