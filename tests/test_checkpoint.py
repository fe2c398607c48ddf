"""The ACM checkpoint: round trips, atomic writes, refusal of damaged or mismatched files."""

import pytest
import torch
from safetensors.torch import save_file

import acmtool
from acmtool.errors import AcmInputError
from acmtool.io.sources import example_inputs, load_model
from checkpoint_edits import rewrite


def converted(targets="mlp"):
    loaded = load_model("timm:test_vit")
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(targets=targets),
                    example_inputs=example_inputs(loaded.model, loaded.spec))
    return loaded


@pytest.mark.parametrize("targets", ["mlp", "mlp+attn"])
def test_round_trip(tmp_path, targets):
    loaded = converted(targets)
    path = acmtool.save(loaded.model, tmp_path / "m.acm.safetensors", source=loaded.spec)
    back = acmtool.load(path)
    x = torch.randn(2, 3, 160, 160)
    torch.testing.assert_close(back(x), loaded.model.eval()(x))
    assert back.acmtool_info["config"]["targets"] == targets
    assert back.acmtool_info["flops_profile"] == loaded.model.acmtool_info["flops_profile"]
    assert back.acmtool_info["source"] == loaded.spec


def test_user_model_needs_model_argument(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    acmtool.acmize_(model)
    acmtool.save(model, tmp_path / "u.acm.safetensors")
    with pytest.raises(AcmInputError, match="model="):
        acmtool.load(tmp_path / "u.acm.safetensors")
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    back = acmtool.load(tmp_path / "u.acm.safetensors", model=fresh)
    x = torch.randn(3, 8)
    torch.testing.assert_close(back(x), model.eval()(x))


def test_save_is_atomic(tmp_path, monkeypatch):
    loaded = converted()
    target = tmp_path / "m.acm.safetensors"
    target.write_bytes(b"previous")

    def boom(model, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr("safetensors.torch.save_model", boom)
    with pytest.raises(OSError, match="disk full"):
        acmtool.save(loaded.model, target, source=loaded.spec)
    assert target.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.acm.safetensors"]


def test_save_needs_a_converted_model(tmp_path):
    with pytest.raises(AcmInputError, match="not converted"):
        acmtool.save(torch.nn.Linear(2, 2), tmp_path / "x.safetensors")


def test_refuses_mismatched_or_damaged_checkpoints(tmp_path):
    loaded = converted()
    good = acmtool.save(loaded.model, tmp_path / "good.acm.safetensors", source=loaded.spec)
    cases = {
        "learners.safetensors": (dict(info=lambda i: i["config"].update(num_learners=2)), "do not match"),
        "targets.safetensors": (dict(info=lambda i: i["config"].update(targets="mlp+attn")), "does not match"),
        "missing.safetensors": (dict(tensors=lambda t: t.pop("blocks.0.mlp.w1")), "do not match"),
        "shape.safetensors": (dict(tensors=lambda t: t.update({"blocks.0.mlp.b2": torch.zeros(3)})),
                              "do not match"),
        "version.safetensors": (dict(meta=lambda m: m.update(format_version="99")), "format"),
        "info.safetensors": (dict(meta=lambda m: m.update(info="{not json")), "damaged"),
    }
    for name, (edit, message) in cases.items():
        rewrite(good, tmp_path / name, **edit)
        with pytest.raises(AcmInputError, match=message):
            acmtool.load(tmp_path / name)
    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(AcmInputError, match="not an ACM checkpoint"):
        acmtool.load(tmp_path / "plain.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(AcmInputError, match="not a valid"):
        acmtool.load(tmp_path / "cut.safetensors")
