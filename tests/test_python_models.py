"""Checkpoints of timm models built in Python record the architecture when it can be known
(acmtool.io.timm_spec), so that the command line rebuilds them; acmtool.export and acmtool.runtime
are reachable from `import acmtool`."""
import pytest
import timm
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.io.checkpoint import read_info

ort = pytest.importorskip("onnxruntime")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("kwargs", [{}, {"num_classes": 7},
                                    {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3}])
def test_timm_model_from_python_records_its_architecture(tmp_path, kwargs):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", **kwargs).eval()
    acmtool.acmize_(model, acmtool.AcmConfig(targets="mlp"))
    ckpt = acmtool.save(model, tmp_path / "m.acm.safetensors")
    source = read_info(ckpt)["source"]
    assert source["kind"] == "timm" and source["name"] == "vit_tiny_patch16_224"
    again = acmtool.load(ckpt)  # rebuilt from the record alone
    x = torch.randn(1, 3, *model.patch_embed.img_size)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


def test_a_model_timm_cannot_rebuild_stays_a_user_model(tmp_path):
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1).eval()
    model.head = torch.nn.Linear(model.embed_dim, 3)  # changed after creation: num_classes still says 1000
    acmtool.acmize_(model, acmtool.AcmConfig(targets="mlp"))
    ckpt = acmtool.save(model, tmp_path / "m.acm.safetensors")
    assert read_info(ckpt)["source"]["kind"] == "user"
    r = CliRunner().invoke(cli, ["inspect", str(ckpt)])
    assert r.exit_code == 2 and "built in Python" in r.output


def test_python_path_export_verify_runtime(tmp_path):
    # the whole path from Python, then the command line on what Python wrote
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2,
                              num_heads=3, num_classes=5).eval()
    acmtool.acmize_(model, acmtool.AcmConfig(targets="mlp"))
    ckpt = acmtool.save(model, tmp_path / "m.acm.safetensors")
    x = torch.randn(3, 3, 32, 32)
    path = acmtool.export(model, tmp_path / "m.acm.onnx", example_inputs=x)
    out = acmtool.runtime.session(path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert (abs(out - model(x).numpy()).max()) < 1e-4
    with pytest.raises(acmtool.AcmInputError, match="already exists"):  # the checkpoint's default output
        acmtool.export(ckpt)
    assert acmtool.export(ckpt, tmp_path / "again.acm.onnx", format="standard").is_file()
    r = run("verify", path, ckpt)
    assert r.exit_code == 0 and "verify: ok" in r.output, r.output
    r = run("export", ckpt, "-o", tmp_path / "cli.acm.onnx")
    assert r.exit_code == 0, r.output
    assert run("inspect", ckpt).exit_code == 0
