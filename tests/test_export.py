"""Whole models through ONNX export, in both formats, against the PyTorch reference."""
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import acmtool
from acmtool.errors import AcmInputError
from acmtool.export import export_onnx
from acmtool.export.onnx_export import use_impl
from acmtool.export.verify import verify
from acmtool.io.sources import load_model

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")


def _library_or_skip():
    from acmtool.runtime import library_path
    try:
        return library_path()
    except AcmInputError as e:
        pytest.skip(f"custom-op library not built: {e}")


def randomise_gates(model):
    """Trained-looking gates: every k occurs, so the kernels see mixed K."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, m in acmtool.layers.acm_modules(model):
            m.gate.fc2.weight.copy_(torch.randn(m.gate.fc2.weight.shape, generator=g) * 2)
            m.gate.fc2.bias.zero_()
    return model


def vit(targets):
    loaded = load_model("timm:vit_tiny_patch16_224", model_kwargs=dict(img_size=32, patch_size=8, embed_dim=48,
                                                                        depth=2, num_heads=3, num_classes=7))
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(targets=targets))
    loaded.model.acmtool_info["source"] = loaded.spec
    return randomise_gates(loaded.model.eval()), torch.randn(2, 3, 32, 32)


def bert(targets):
    import transformers as T
    model = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=70, vocab_size=100)).eval()
    acmtool.acmize_(model, acmtool.AcmConfig(targets=targets))
    model.acmtool_info["source"] = {"kind": "hf", "class": "BertModel", "config": model.config.to_dict()}
    ids = torch.randint(0, 100, (2, 9))
    return randomise_gates(model), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def reference(model, inputs):
    with torch.no_grad(), use_impl(model, "naive"):
        out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return out if isinstance(out, torch.Tensor) else out.last_hidden_state


@pytest.mark.parametrize("fmt", ["custom-op", "standard"])
@pytest.mark.parametrize("build,targets", [(vit, "mlp"), (vit, "mlp+attn"), (bert, "mlp"), (bert, "mlp+attn")])
def test_whole_model_export(tmp_path, build, targets, fmt):
    from acmtool.runtime import session
    if fmt == "custom-op":
        _library_or_skip()
    model, example = build(targets)
    path = export_onnx(model, tmp_path / "m.onnx", example, fmt)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    custom = [n for n in proto.graph.node if n.op_type == "DynamicLearners"]
    assert len(custom) == (len(acmtool.layers.acm_modules(model)) if fmt == "custom-op" else 0)
    sess = session(path)
    for batch in (1, 3, 8):
        if isinstance(example, dict):
            for seq in (1, 5, 17):
                ids = torch.randint(0, 100, (batch, seq))
                mask = torch.ones_like(ids)
                mask[0, seq // 2 + 1:] = 0  # padding in the first sequence
                inputs = {"input_ids": ids, "attention_mask": mask}
                got = sess.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
                # gates may flip on near-ties between runtimes: compare tokens by verify's replay instead
                report = verify(path, model, [inputs], tolerance=1e-4)
                assert report["passed"], report
                assert got.shape == (batch, seq, 32)
        else:
            x = torch.randn(batch, 3, 32, 32)
            got = sess.run(None, {"input": x.numpy()})[0]
            report = verify(path, model, [x], tolerance=1e-4)
            assert report["passed"] and report["k_found"] == len(acmtool.layers.acm_modules(model)), report
            assert report["k_agreement"] > 0.99
            if report["k_agreement"] == 1:  # no near-tie flipped: the free-running reference agrees too
                ref = reference(model, x).numpy()
                np.testing.assert_allclose(got, ref, atol=1e-4)
                assert report["output_scale"] == pytest.approx(float(np.abs(ref).max()), rel=1e-4)


def test_large_models_keep_their_weights_beside_them(tmp_path, monkeypatch):
    """Over the external-data threshold the weights go to NAME.acm.onnx.data, named so inside the model."""
    from acmtool.export import onnx_export
    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)  # a tiny model takes the large-model path
    model, example = vit("mlp")
    path = export_onnx(model, tmp_path / "big.acm.onnx", example, "standard")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.acm.onnx", "big.acm.onnx.data"]
    proto = onnx.load(str(path), load_external_data=False)
    assert {e.value for i in proto.graph.initializer for e in i.external_data if e.key == "location"} == \
        {"big.acm.onnx.data"}
    assert verify(path, model, [torch.randn(3, 3, 32, 32)], tolerance=1e-4)["passed"]  # reads the data in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.acm.onnx", "big.acm.onnx.data"]


@pytest.mark.parametrize("external", [False, True])
def test_a_failed_export_leaves_no_files(tmp_path, monkeypatch, external):
    """Export fails after the model (and its data) were written: neither temporary file stays, and the
    file that --force was to replace is untouched."""
    from acmtool.export import onnx_export
    if external:
        monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    model, example = vit("mlp")
    (tmp_path / "m.acm.onnx").write_bytes(b"previous")

    def fail(path, **kw):
        assert (Path(path).parent / "m.acm.onnx.data").is_file() == external  # the data was written
        raise RuntimeError("checker says no")
    monkeypatch.setattr("onnx.checker.check_model", fail)
    with pytest.raises(RuntimeError, match="checker says no"):
        export_onnx(model, tmp_path / "m.acm.onnx", example, "standard", force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.acm.onnx"]
    assert (tmp_path / "m.acm.onnx").read_bytes() == b"previous"


def test_verify_command_exit_codes(tmp_path):
    """verify passes on a faithful export and exits 1 when the ONNX weights were changed."""
    import subprocess
    import sys
    from onnx import numpy_helper
    _library_or_skip()
    model, example = vit("mlp")
    ckpt = acmtool.save(model, tmp_path / "v.acm.safetensors")
    good = export_onnx(model, tmp_path / "good.onnx", example)
    run = lambda onnx_path: subprocess.run([sys.executable, "-m", "acmtool", "verify", str(onnx_path), str(ckpt)],
                                           capture_output=True, text=True, timeout=300)
    ok = run(good)
    assert ok.returncode == 0 and "verify: ok" in ok.stdout and "K agreement" in ok.stdout, ok.stdout + ok.stderr
    proto = onnx.load(str(good))
    for init in proto.graph.initializer:
        if init.name.endswith("mlp.w2"):
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, init.name))
            break
    else:
        pytest.fail("no ACM weight found in the graph")
    onnx.save(proto, str(tmp_path / "bad.onnx"))
    bad = run(tmp_path / "bad.onnx")
    assert bad.returncode == 1 and "acmtool: error: outputs differ" in bad.stderr, bad.stdout + bad.stderr
    assert "float32 rounding explains" in bad.stderr, bad.stderr
