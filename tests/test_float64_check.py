"""verify's float64 arbiter: a difference beyond the tolerance passes only where float32 rounding explains it."""
import numpy as np
import pytest
import torch

from acmtool.errors import AcmInputError
from acmtool.export import export_onnx
from acmtool.export.float64_check import FLOAT32_EPS, FLOAT32_SLACK, errors_against, rounding_verdict
from acmtool.export.verify import verify

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def test_rounding_verdict_by_hand():
    exact = np.array([[10.0, -2.0, 0.5]])
    ref32 = exact + np.array([[0.0, 1e-4, 0.0]])
    close = errors_against((exact + np.array([[3e-4, 0.0, 0.0]])).astype(np.float32), ref32, exact)
    assert close["ort"] == pytest.approx(3e-4, rel=1e-2) and close["reference"] == pytest.approx(1e-4)
    assert close["scale"] == 10.0
    v = rounding_verdict([close], [close], allowed=1e-5)
    assert v["bound"] == pytest.approx(FLOAT32_SLACK * 1e-4) and v["passed"] and v["batches"] == 1
    far = errors_against((exact + np.array([[0.0, 0.0, 5e-4]])).astype(np.float32), exact, exact)
    assert not rounding_verdict([far], [far, close], allowed=1e-5)["passed"]
    # float32's error is measured over every batch checked: a batch where the reference happens to
    # be exact is judged by the others' (Whisper's encoder: 2.3e-4 on one batch, 1.1e-3 on another)
    assert rounding_verdict([close | {"reference": 0.0}], [close | {"reference": 0.0}, close], 1e-5)["passed"]
    # a float32 reference that is exact everywhere still leaves the output's own rounding
    exact_ref = errors_against(exact.astype(np.float32), exact, exact)
    assert rounding_verdict([exact_ref], [exact_ref], 0.0)["bound"] == pytest.approx(FLOAT32_SLACK * FLOAT32_EPS * 10)
    assert rounding_verdict([far], [far], allowed=1e-3)["passed"]  # within the tolerance anyway


def _vit_export(tmp_path):
    from acmtool.runtime import library_path
    try:
        library_path()
    except AcmInputError as e:
        pytest.skip(f"custom-op library not built: {e}")
    from test_export import vit
    torch.manual_seed(0)
    model, example = vit("mlp")
    return model, example, export_onnx(model, tmp_path / "m.onnx", example)


def test_verify_hands_rounding_to_float64(tmp_path):
    """A tolerance no float32 path meets: every batch goes to the float64 reference, and a faithful
    export passes there, ONNX Runtime as near the exact output as the float32 reference."""
    model, example, path = _vit_export(tmp_path)
    report = verify(path, model, [example, torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))],
                    tolerance=1e-12)
    f64 = report["float64"]
    assert report["max_abs_diff"] > report["allowed"] and f64["batches"] == 2
    assert report["passed"] and f64["passed"] and f64["ort"] <= f64["bound"] < 1e-4, f64


def test_verify_float64_still_fails_a_wrong_export(tmp_path):
    """Weights changed by 1 % in the graph: float64 does not excuse it."""
    import onnx
    from onnx import numpy_helper
    model, example, path = _vit_export(tmp_path)
    proto = onnx.load(str(path))
    init = next(i for i in proto.graph.initializer if i.name.endswith("mlp.w2"))
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, init.name))
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    report = verify(tmp_path / "bad.onnx", model, [example], tolerance=1e-12)
    f64 = report["float64"]
    assert not report["passed"] and not f64["passed"] and f64["ort"] > 100 * f64["reference"], f64
