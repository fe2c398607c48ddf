"""ACMs that cannot beat their dense block export as it (acmtool.export.dense_fallback): the choice,
the export (dense MLP of all N learners, no gate for that block), verify at k = N, inspect and the
export command's options."""
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.errors import AcmInputError
from acmtool.export import export_onnx
from acmtool.export.dense_fallback import (DENSE_ABOVE, dense_choice, densified, expected_cost,
                                           exported_dense_blocks, mean_k_of_checkpoint)
from acmtool.io.sources import load_model
from acmtool.layers.acm import acm_modules

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=7)
FIRST, SECOND = "blocks.0.mlp", "blocks.1.mlp"


def vit():
    torch.manual_seed(0)
    loaded = load_model("timm:vit_tiny_patch16_224", model_kwargs=VIT)
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(targets="mlp"))
    model = loaded.model.eval()
    with torch.no_grad():  # random gates: tokens spread over every k
        for _, m in acm_modules(model):
            for p in m.gate.parameters():
                p.normal_()
    model.acmtool_info.update(source=loaded.spec, budget=0.5)
    return model


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_choice_counts_the_gate_and_leaves_cheap_acms_alone():
    model = vit()
    costs = expected_cost(model, {FIRST: 4.0, SECOND: 2.0})
    gate = costs[FIRST] - 1.0
    assert 0 < gate < 0.2 and costs[SECOND] == pytest.approx(0.5 + gate)
    assert list(dense_choice(model, {FIRST: 4.0, SECOND: 2.0})) == [FIRST]
    assert list(dense_choice(model, {FIRST: 3.4, SECOND: 2.0}, above=0.8)) == [FIRST]  # 0.85 + gate
    assert dense_choice(model, {FIRST: 4.0}, above=None) == {}
    assert dense_choice(model, {}) == {}  # no measured mean k: nothing to judge by
    with pytest.raises(AcmInputError, match="--dense-above must be positive"):
        dense_choice(model, {FIRST: 4.0}, above=0)


def test_mean_k_comes_from_the_conversion_report():
    info = {"report": {"validation": {"per_layer": {FIRST: {"mean_k": 3.9, "budget": 0.975}}}}}
    assert mean_k_of_checkpoint(info) == {FIRST: 3.9}
    assert mean_k_of_checkpoint({}) == {} and mean_k_of_checkpoint({"report": {"validation": {}}}) == {}


@pytest.mark.parametrize("fmt", ["custom-op", "standard"])
def test_dense_block_export_equals_the_acm_at_k_n(tmp_path, fmt):
    from acmtool.runtime import session
    model = vit()
    path = export_onnx(model, tmp_path / "m.acm.onnx", torch.randn(2, 3, 32, 32), fmt, dense={SECOND: 0.97})
    proto = onnx.load(str(path))
    argmax = [n for n in proto.graph.node if n.op_type == "ArgMax"]
    assert len(argmax) == 1  # only the first block keeps its gate
    assert exported_dense_blocks(path) == {SECOND: 0.97}
    sess = session(path)
    g = torch.Generator().manual_seed(1)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32, generator=g)
        with torch.no_grad(), densified(model, [SECOND]):
            ref = model(x).numpy()
            with densified(model, [FIRST]):
                all_dense = model(x).numpy()
        got = sess.run(None, {"input": x.numpy()})[0]
        # the dense block runs every learner (k = N), the other ACM still chooses: the export follows
        # the reference where only the second block is dense, and differs from the fully dense one
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
        assert np.abs(got - all_dense).max() > 1e-3
    assert all(m.forced_k is None for _, m in acm_modules(model))  # the switch is undone


def test_export_verify_inspect_with_a_dense_block(tmp_path):
    model = vit()
    model.acmtool_info["report"] = {"validation": {"per_layer": {FIRST: {"mean_k": 4.0}, SECOND: {"mean_k": 1.5}}}}
    ckpt = acmtool.save(model, tmp_path / "m.acm.safetensors")
    r = run("export", ckpt)
    out = tmp_path / "m.acm.onnx"
    assert r.exit_code == 0 and "1 ACMs exported as dense blocks" in r.output and FIRST in r.output, r.output
    assert list(exported_dense_blocks(out)) == [FIRST]
    r = run("verify", out, ckpt, "--tolerance", "1e-4")
    assert r.exit_code == 0 and "checked at k = N" in r.output and "verify: ok" in r.output, r.output
    r = run("verify", out, ckpt, "--tolerance", "1e-12")  # float32 paths differ by more: float64 says it is rounding
    assert r.exit_code == 0 and "beyond it on" in r.output and "float32 rounding, passed" in r.output, r.output
    r = run("inspect", out)
    assert r.exit_code == 0 and "exported as dense blocks" in r.output and "(dense, cost" in r.output, r.output
    # --keep-acms: every ACM stays an ACM; a higher --dense-above too
    for opts in (["--keep-acms"], ["--dense-above", "1.5"]):
        r = run("export", ckpt, "-o", tmp_path / "keep.acm.onnx", "--force", *opts)
        assert r.exit_code == 0 and "dense blocks" not in r.output, r.output
        assert exported_dense_blocks(tmp_path / "keep.acm.onnx") == {}
    assert DENSE_ABOVE < 1


def test_verify_refuses_dense_blocks_of_another_model(tmp_path):
    from acmtool.export.verify import verify
    path = export_onnx(vit(), tmp_path / "m.acm.onnx", torch.randn(2, 3, 32, 32), "custom-op", dense={SECOND: 1.0})
    other = load_model("timm:vit_tiny_patch16_224", model_kwargs=dict(VIT, depth=1)).model  # no second block
    acmtool.acmize_(other, acmtool.AcmConfig(targets="mlp"))
    with pytest.raises(AcmInputError, match="another model"):
        verify(path, other.eval(), [torch.randn(1, 3, 32, 32)])
