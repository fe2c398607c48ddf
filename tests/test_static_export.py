"""Static checkpoints (every token runs round(budget * N) learners) export as the narrower dense model
they are: plain ONNX with the first k learners' weights, in both formats, equal to PyTorch; verify and
inspect work on them."""
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.export import FORMATS, export_onnx
from acmtool.io.sources import load_model
from acmtool.layers.control import apply_static_k

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=7)  # MLP 192 = 4 x 48


def static_vit(targets: str, budget: float):
    loaded = load_model("timm:vit_tiny_patch16_224", model_kwargs=VIT)
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(targets=targets))
    model = loaded.model.eval()
    model.acmtool_info.update(source=loaded.spec, static=True, budget=budget)
    apply_static_k(model, budget)
    return model


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("targets,budget", [("mlp", 0.5), ("mlp+attn", 0.25), ("mlp", 0.1)])  # 0.1: k = 0
def test_static_export_equals_pytorch(tmp_path, fmt, targets, budget):
    model = static_vit(targets, budget)
    path = export_onnx(model, tmp_path / "s.acm.onnx", torch.randn(2, 3, 32, 32), fmt)
    proto = onnx.load(str(path))
    assert {o.domain for o in proto.opset_import} == {""}  # stock ops only: no custom op, no gate
    assert not [n for n in proto.graph.node if n.op_type in ("DynamicLearners", "ArgMax")]
    sess = ort.InferenceSession(str(path))  # plain ONNX Runtime, without acmtool's library
    g = torch.Generator().manual_seed(1)
    for batch in (1, 5):
        x = torch.randn(batch, 3, 32, 32, generator=g)
        with torch.no_grad():
            ref = model(x).numpy()
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], ref, atol=1e-5, rtol=0)


def test_static_export_holds_only_the_k_learners(tmp_path):
    model = static_vit("mlp", 0.5)  # N = 4 learners of h = 48 (MLP width 192): k = 2, width 96
    proto = onnx.load(str(export_onnx(model, tmp_path / "s.acm.onnx", torch.randn(2, 3, 32, 32), "standard")))
    shapes = [list(i.dims) for i in proto.graph.initializer]
    assert shapes.count([48, 96]) == 2 and shapes.count([96, 48]) == 2  # fc1 and fc2 of both blocks (folded)
    assert not [s for s in shapes if 192 in s or s[:1] == [4]]  # neither the full width nor packed learners
    assert not [i.name for i in proto.graph.initializer if ".gate." in i.name]


def test_static_checkpoint_export_verify_inspect(tmp_path):
    model = static_vit("mlp", 0.5)
    ckpt = acmtool.save(model, tmp_path / "s.acm.safetensors")
    onnx_model = tmp_path / "s.acm.onnx"
    r = run("export", ckpt)  # the default name: NAME.acm.onnx beside the checkpoint
    assert r.exit_code == 0 and "static" in r.output and onnx_model.is_file(), r.output
    r = run("verify", onnx_model, ckpt, "--tolerance", "1e-5")
    assert r.exit_code == 0 and "static model" in r.output and "verify: ok" in r.output, r.output
    r = run("inspect", onnx_model)
    assert r.exit_code == 0 and "static ACM model" in r.output and "blocks.1.mlp" in r.output, r.output
    r = run("inspect", ckpt)
    assert r.exit_code == 0 and "every token runs k = 2" in r.output, r.output
    r = run("export", ckpt, "-o", tmp_path / "std.acm.onnx", "--format", "standard")
    assert r.exit_code == 0, r.output
    assert run("verify", tmp_path / "std.acm.onnx", ckpt, "--tolerance", "1e-5").exit_code == 0
