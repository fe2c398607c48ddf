"""What commands write: NAME.acm.onnx beside NAME.acm.safetensors; an existing output is never
replaced without --force (refused before any work, left byte-identical); --force replaces it; files
get the mode of the user's umask."""
import json
import os
import stat

import pytest
import torch
from click.testing import CliRunner
from tiny_run import convert_args, write_squares

import acmtool
from acmtool.cli.main import cli
from acmtool.io.outputs import external_data_path, onnx_path, report_path
from acmtool.io.sources import load_model

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

OUTPUTS = ("t.acm.safetensors", "t.report.json", "t.acm.onnx", "t.acm.onnx.data")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def refused(r, name):
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    return r.exit_code == 2 and len(lines) == 1 and name in lines[0] and "--force" in lines[0]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_squares(tmp_path_factory.mktemp("data") / "squares.npz")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An initialised (untrained) ACM checkpoint of a tiny ViT."""
    loaded = load_model("timm:vit_tiny_patch16_224", model_kwargs=dict(img_size=32, patch_size=8, embed_dim=48,
                                                                        depth=1, num_heads=3, num_classes=5))
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(targets="mlp"))
    return acmtool.save(loaded.model, tmp_path_factory.mktemp("ckpt") / "m.acm.safetensors", source=loaded.spec)


def test_output_names():
    assert onnx_path("out/vit.acm.safetensors") == onnx_path("out/vit.safetensors")
    assert str(onnx_path("out/vit.acm.safetensors")) == os.path.join("out", "vit.acm.onnx")
    assert str(report_path("vit.acm.safetensors")) == "vit.report.json"
    assert str(external_data_path("vit.acm.onnx")) == "vit.acm.onnx.data"


@pytest.mark.parametrize("existing", OUTPUTS)
def test_convert_refuses_an_existing_output_before_any_work(tmp_path, npz, monkeypatch, existing):
    (tmp_path / existing).write_bytes(b"keep me")

    def no_work(*a, **kw):
        raise AssertionError("convert loaded the model before checking its outputs")
    monkeypatch.setattr("acmtool.train.pipeline.load_model", no_work)
    r = run(*convert_args(npz, tmp_path / "t.acm.safetensors"))
    assert refused(r, existing), r.output
    assert [p.name for p in tmp_path.iterdir()] == [existing]  # no run folder, nothing written
    assert (tmp_path / existing).read_bytes() == b"keep me"


def test_convert_without_data_refuses_too(tmp_path, monkeypatch):
    (tmp_path / "v.acm.onnx").write_bytes(b"keep me")
    monkeypatch.setattr("acmtool.io.sources.load_model", lambda *a, **kw: pytest.fail("model loaded"))
    r = run("convert", "timm:test_vit", "-o", tmp_path / "v.acm.safetensors")
    assert refused(r, "v.acm.onnx"), r.output
    assert [p.name for p in tmp_path.iterdir()] == ["v.acm.onnx"]


def test_convert_force_replaces_with_the_umask_mode(tmp_path, npz):
    for name in OUTPUTS[:3]:
        (tmp_path / name).write_bytes(b"old")
    old = os.umask(0o022)
    try:
        r = run(*convert_args(npz, tmp_path / "t.acm.safetensors", "--max-steps", 1, "--force"))
    finally:
        os.umask(old)
    assert r.exit_code == 0, r.output
    assert acmtool.load(tmp_path / "t.acm.safetensors").acmtool_info["budget"] == 0.5
    assert json.loads((tmp_path / "t.report.json").read_text())["onnx"] == str(tmp_path / "t.acm.onnx")
    assert (tmp_path / "t.acm.onnx").read_bytes()[:4] != b"old"
    assert {n: stat.S_IMODE(os.stat(tmp_path / n).st_mode) for n in OUTPUTS[:3]} == dict.fromkeys(OUTPUTS[:3], 0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OUTPUTS[:3])  # no temporary file, no run folder


@pytest.mark.parametrize("existing", ["m.acm.onnx", "m.acm.onnx.data"])
def test_export_refuses_then_force_replaces(tmp_path, checkpoint, existing):
    target = checkpoint.with_name(existing)
    target.write_bytes(b"keep me")
    try:
        r = run("export", checkpoint)  # default output: m.acm.onnx beside the checkpoint
        assert refused(r, existing), r.output
        assert target.read_bytes() == b"keep me"
        r = run("export", checkpoint, "--force")
        assert r.exit_code == 0 and "wrote" in r.output, r.output
        assert run("verify", onnx_path(checkpoint), checkpoint).exit_code == 0
    finally:
        for name in ("m.acm.onnx", "m.acm.onnx.data"):
            checkpoint.with_name(name).unlink(missing_ok=True)


@pytest.mark.parametrize("command", ["visualize", "bench", "eval"])
def test_other_writers_refuse_an_existing_file_first(tmp_path, command):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    missing = tmp_path / "missing"  # inputs that would fail: the refusal comes before reading them
    args = {"visualize": ["visualize", missing, missing, "-o", out],
            "bench": ["bench", missing, "--json", out],
            "eval": ["eval", missing, "--data", missing, "--json", out]}[command]
    r = run(*args)
    assert refused(r, "out.png"), r.output
    assert out.read_bytes() == b"keep me"
    r = run(*args, "--force")
    assert r.exit_code == 2 and "--force" not in r.output  # now it gets to the inputs


def test_python_export_refuses_unless_force(tmp_path, checkpoint):
    from acmtool.errors import AcmInputError
    from acmtool.export import export_onnx
    model = acmtool.load(checkpoint)
    (tmp_path / "x.acm.onnx").write_bytes(b"keep me")
    with pytest.raises(AcmInputError, match="--force"):
        export_onnx(model, tmp_path / "x.acm.onnx", torch.randn(2, 3, 32, 32))
    assert export_onnx(model, tmp_path / "x.acm.onnx", torch.randn(2, 3, 32, 32), force=True).stat().st_size > 100
