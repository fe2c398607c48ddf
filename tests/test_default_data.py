"""`acmtool convert MODEL --budget B` without --data distils on the built-in data for the model's
inputs (acmtool.data.default); --device auto picks CUDA only where torch sees a GPU."""
import json

import pytest
import timm
import torch
from click.testing import CliRunner

from acmtool.cli.main import cli
from acmtool.data.default import default_data
from acmtool.errors import AcmInputError
from acmtool.train.distributed import resolve_device
from acmtool.train.pipeline import report_path

pytest.importorskip("onnxruntime")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_default_data_follows_the_model_s_inputs():
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    assert default_data(vit, {}) == "fashion-mnist"
    import transformers as T
    bert = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    vocab_size=60, max_position_embeddings=32))
    assert default_data(bert, {"kind": "hf"}) == "fortunes"
    with pytest.raises(AcmInputError, match="no built-in data fits this model.*give --data"):
        default_data(torch.nn.Linear(3, 4), {})


def test_device_auto():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"


def test_convert_a_pickled_timm_module_without_data(tmp_path):
    # the headline command as a new user types it: a whole module saved with torch.save, a budget, no --data
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                            num_classes=5).eval()
    torch.save(vit, tmp_path / "model.pt")
    out = tmp_path / "model.acm.safetensors"
    r = run("convert", tmp_path / "model.pt", "--budget", "0.5", "-o", out, "--max-steps", 2, "--max-samples", 120,
            "--batch-size", 16)
    assert r.exit_code == 0, r.output
    assert "no --data: distilling on the built-in fashion-mnist data" in r.output
    report = json.loads(report_path(out).read_text())
    assert report["default_data"] is True and report["data"] == "fashion-mnist"
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert out.is_file() and (tmp_path / "model.acm.onnx").is_file()
    assert run("verify", tmp_path / "model.acm.onnx", out).exit_code == 0


@pytest.mark.parametrize("extra,message", [(["--static"], "--static needs --budget"),
                                           (["--data", "fortunes"], "--data needs --budget")])
def test_training_options_need_a_budget(tmp_path, extra, message):
    r = CliRunner().invoke(cli, ["convert", "timm:test_vit", "-o", str(tmp_path / "x.acm.safetensors"), *extra])
    assert r.exit_code == 2 and message in r.output


def test_config_file_reproduces_a_run_and_the_command_line_wins(tmp_path):
    from tiny_run import TINY, TINY_ARGS, write_squares
    npz = write_squares(tmp_path / "s.npz", n=64)
    first = tmp_path / "a.acm.safetensors"
    r = run("convert", TINY, "--model-args", json.dumps(TINY_ARGS), "--budget", "0.25", "--data", npz, "-o", first,
            "--max-steps", 2, "--batch-size", 16, "--seed", 3, "--no-onnx")
    assert r.exit_code == 0, r.output
    report = json.loads(report_path(first).read_text())
    opts = report["convert_options"]
    assert opts["seed"] == 3 and opts["budget"] == 0.25 and opts["max_steps"] == 2 and opts["onnx"] is False
    second = tmp_path / "b.acm.safetensors"
    # the whole report as --config: every option comes back; --seed on the command line wins
    r = run("convert", TINY, "--config", report_path(first), "-o", second, "--seed", 4)
    assert r.exit_code == 0, r.output
    again = json.loads(report_path(second).read_text())["convert_options"]
    assert {k: v for k, v in again.items() if k not in ("output", "seed")} == \
        {k: v for k, v in opts.items() if k not in ("output", "seed")}
    assert again["seed"] == 4 and not (tmp_path / "b.acm.onnx").exists()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"budget": 0.5, "learning_rate": 1}))
    r = run("convert", TINY, "--config", bad)
    assert r.exit_code == 2 and "unknown options learning_rate" in r.output
