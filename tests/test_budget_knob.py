"""The run-time budget knob (issue 17): one converted model at any budget in its calibrated range,
in PyTorch (acmtool.set_budget / at_budget) and in the exported ONNX model (an optional `budget`
input whose default is the trained budget), both formats, checked against each other; the table
the conversion calibrates; eval --budgets; every misuse a clear error."""
import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.cost import budget as budget_of
from acmtool.layers.acm import acm_modules
from acmtool.layers.budget_knob import check_table, shift_at
from tiny_run import convert_args, write_squares

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A tiny ViT converted at 0.5: its checkpoint, its custom-op ONNX model and its images."""
    tmp = tmp_path_factory.mktemp("knob")
    npz = write_squares(tmp / "squares.npz")
    out = tmp / "vit.acm.safetensors"
    r = CliRunner().invoke(cli, convert_args(npz, out, "--max-steps", 6, "--batch-size", 32), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    x = torch.from_numpy(np.load(npz)["x"][:200])
    return {"ckpt": out, "onnx": tmp / "vit.acm.onnx", "x": x, "tmp": tmp}


def achieved(model, x) -> float:
    with torch.no_grad():
        model(x)
    return budget_of(model, {n: float(m.last_k.float().mean()) for n, m in acm_modules(model)})


def test_table_interpolates_linearly_and_checks_itself():
    table = {"budgets": [0.1, 0.5, 1.0], "shifts": [0.4, 0.0, -0.5]}
    for b, want in ((0.1, 0.4), (0.3, 0.2), (0.5, 0.0), (0.75, -0.25), (1.0, -0.5), (0.05, 0.4)):
        assert float(shift_at(table, torch.tensor(b))) == pytest.approx(want, abs=1e-6)
    for bad, message in (({"budgets": [0.5, 0.4], "shifts": [0, 0]}, "rise strictly"),
                         ({"budgets": [0.1, 0.5], "shifts": [0, 1.0]}, "must not rise"),
                         ({"budgets": [0.1], "shifts": [0]}, "two or more"),
                         ({"budgets": [0.1, float("nan")], "shifts": [0, 0]}, "finite"),
                         ([], "is {'budgets'")):
        with pytest.raises(ValueError, match=message):
            check_table(bad)


def test_one_model_hits_each_budget_of_its_range(converted):
    model = acmtool.load(converted["ckpt"])
    table = model.acmtool_info["budget_table"]
    assert 0.5 in table["budgets"] and table["budgets"][-1] == 1.0
    assert table["shifts"][table["budgets"].index(0.5)] == 0.0
    report = json.loads(converted["ckpt"].with_name("vit.report.json").read_text())
    assert report["budget_table"]["budgets"] == table["budgets"]
    x = converted["x"]
    base = achieved(model, x)
    # the table hit each grid point within 0.02 on its calibration batches; on these 200 images
    # (a superset, seen through other batches) the interpolated shifts land within 0.05
    for b in (table["budgets"][0], 0.25, 0.4, 0.5, 0.6, 0.75, 1.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with acmtool.at_budget(model, b):
                got = achieved(model, x)
        assert got == pytest.approx(b, abs=0.05), (b, got)
    assert achieved(model, x) == pytest.approx(base, abs=1e-9)  # at_budget restores the trained budget
    acmtool.set_budget(model, 0.75)
    assert achieved(model, x) > base + 0.1
    acmtool.set_budget(model, None)
    assert achieved(model, x) == pytest.approx(base, abs=1e-9)


def test_the_table_measures_on_the_first_samples_that_hold_enough_tokens(converted, monkeypatch):
    """Each grid point is a pass over the table's batches: a long-input model (Whisper: 48000 encoder
    tokens per batch of 32) needs the first 11 clips, not all the calibration batches."""
    from acmtool.train import budget_table as bt
    model = acmtool.load(converted["ckpt"]).eval()
    x = converted["x"]
    sizes = [16 + i for i in range(8)]  # each batch known by its size
    starts = np.cumsum([0] + sizes)
    batches = [x[a:b] for a, b in zip(starts[:-1], starts[1:])]
    _, acm = next(iter(acm_modules(model)))
    tokens = []
    h = acm.register_forward_hook(lambda m, inp, out: tokens.append(inp[0].reshape(-1, inp[0].shape[-1]).shape[0]))
    with torch.no_grad():
        model(batches[0])
    h.remove()
    per_sample = tokens[0] // 16
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]))
    monkeypatch.setattr(bt, "TABLE_TOKENS", tokens[0] + 5 * per_sample)  # 21 samples: 16, then 5 of the next 17
    table = bt.budget_table(model, batches, 0.5, "cpu")
    assert 0.5 in table["budgets"]
    assert set(seen) == {16, 5} and seen[:3] == [16, 5, 16]  # the first batch measured once first
    monkeypatch.setattr(bt, "TABLE_TOKENS", 8 * per_sample)  # the first batch holds more: its first 8 rows
    seen.clear()
    table = bt.budget_table(model, batches, 0.5, "cpu")
    assert 0.5 in table["budgets"]
    assert seen[0] == 16 and set(seen[1:]) == {8}
    monkeypatch.setattr(bt, "TABLE_TOKENS", 10 ** 9)  # more than there is: every batch
    seen.clear()
    bt.budget_table(model, batches, 0.5, "cpu")
    assert set(seen) == set(sizes) and seen.count(16) == seen.count(23)
    seen.clear()  # a caller's own cap (the range fine-tuning's cheap tables) wins over TABLE_TOKENS
    bt.budget_table(model, batches, 0.5, "cpu", tokens=8 * per_sample)
    assert seen[0] == 16 and set(seen[1:]) == {8}


def test_knob_misuse_is_a_clear_error(converted):
    model = acmtool.load(converted["ckpt"])
    lo = model.acmtool_info["budget_table"]["budgets"][0]
    for bad in (0.0, lo / 2, 1.5, "half", True):
        with pytest.raises(acmtool.AcmInputError, match="calibrated range"):
            acmtool.set_budget(model, bad)
    with pytest.warns(UserWarning, match="below the budget the gates were trained at"):
        acmtool.set_budget(model, 0.2)
    model.acmtool_info.pop("budget_table")
    with pytest.raises(acmtool.AcmInputError, match="no budget table"):
        acmtool.set_budget(model, 0.5)
    model.acmtool_info["static"] = True
    with pytest.raises(acmtool.AcmInputError, match="no budget knob"):
        acmtool.set_budget(model, 0.5)


@pytest.mark.parametrize("fmt", ["custom-op", "standard"])
def test_onnx_budget_input_matches_pytorch_and_defaults_to_the_trained_budget(converted, fmt):
    model = acmtool.load(converted["ckpt"])
    path = converted["tmp"] / f"knob-{fmt}.onnx"
    acmtool.export(model, path, example_inputs=converted["x"][:2], format=fmt, dense_above=None)
    sess = acmtool.runtime.session(path)
    assert [i.name for i in sess.get_overridable_initializers()] == ["budget"]
    x = converted["x"][:37]  # a batch the trace did not see
    for b in (None, model.acmtool_info["budget_table"]["budgets"][0], 0.3, 0.5, 0.8, 1.0):
        feeds = {"input": x.numpy()} | ({} if b is None else {"budget": np.array(b, np.float32)})
        y = sess.run(None, feeds)[0]
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            with acmtool.at_budget(model, b):
                ref = model(x).numpy()
        np.testing.assert_allclose(y, ref, atol=1e-4, rtol=0)
    r = CliRunner().invoke(cli, ["verify", str(path), str(converted["ckpt"])], catch_exceptions=False)
    assert r.exit_code == 0 and "budget input checked at default" in r.output, r.output
    meta = json.loads(dict(sess.get_modelmeta().custom_metadata_map)["acmtool.budget"])
    assert meta["trained"] == 0.5 and meta["range"][1] == 1.0


def test_static_models_export_without_a_budget_input(tmp_path):
    npz = write_squares(tmp_path / "s.npz", 120)
    out = tmp_path / "static.acm.safetensors"
    r = CliRunner().invoke(cli, convert_args(npz, out, "--static", "--max-steps", 2), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "budget_table" not in acmtool.load(out).acmtool_info
    sess = acmtool.runtime.session(out.with_name("static.acm.onnx"))
    assert sess.get_overridable_initializers() == []


def test_eval_budgets_prints_one_row_per_budget(converted):
    npz = str(converted["tmp"] / "squares.npz")
    js = converted["tmp"] / "curve.json"
    png = converted["tmp"] / "curve.png"
    r = CliRunner().invoke(cli, ["eval", str(converted["ckpt"]), "--data", npz, "--budgets", "0.25,0.75,1",
                                 "--json", str(js), "--plot", str(png), "--force"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "At other budgets" in r.output and "accuracy vs original" in r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curve = json.loads(js.read_text())["budget_curve"]
    assert [c["budget"] for c in curve] == [0.25, 0.75, 1.0]
    assert [c["achieved_budget"] for c in curve] == sorted(c["achieved_budget"] for c in curve)
    for bad in ("0.2,x", "0,0.5", "1.5"):
        r = CliRunner().invoke(cli, ["eval", str(converted["ckpt"]), "--data", npz, "--budgets", bad])
        assert r.exit_code == 2 and "--budgets" in r.output


def test_bench_budgets_times_the_model_at_each_budget_and_plots_it(converted, tmp_path):
    png, js = tmp_path / "lat.png", tmp_path / "lat.json"
    r = CliRunner().invoke(cli, ["bench", str(converted["onnx"]), "--budgets", "0.25,1", "--warmup", "1",
                                 "--iters", "3", "--threads", "1", "--json", str(js), "--plot", str(png)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "the model at each budget" in r.output
    assert [b["budget"] for b in json.loads(js.read_text())["budgets"]] == [0.25, 1.0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for cmd in (["bench", str(converted["onnx"])], ["eval", str(converted["ckpt"]), "--data", "x.npz"]):
        r = CliRunner().invoke(cli, cmd + ["--plot", str(tmp_path / "no.png")])
        assert r.exit_code == 2 and "give --budgets too" in r.output and not (tmp_path / "no.png").exists()


def test_a_damaged_budget_table_is_refused(converted, tmp_path):
    from checkpoint_edits import rewrite
    bad = tmp_path / "bad.acm.safetensors"
    rewrite(converted["ckpt"], bad, info=lambda info: info["budget_table"].update(budgets=[0.5, 0.4]))
    with pytest.raises(acmtool.AcmInputError, match="budget_table"):
        acmtool.load(bad)


def test_sessions_of_knob_models_do_not_warn_about_the_budget_input(converted, capfd):
    acmtool.runtime.session(converted["onnx"])
    assert "appears in graph inputs" not in capfd.readouterr().err
