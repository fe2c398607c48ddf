"""convert --budget-range LO:HI (issue 17): one model fine-tuned at budgets spread over a range, the
knob's shift applied in training as at inference, the report's accuracy at several budgets, and the
range kept in the checkpoint and the ONNX model; every misuse a clear error."""
import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.errors import AcmInputError
from acmtool.layers.acm import AcmMlp, acm_modules
from acmtool.layers.budget_knob import shift_at
from acmtool.train.budget_range import RangeTraining, range_grid, report_budgets, step_budget
from acmtool.train.options import ConvertOptions, parse_budget_range
from tiny_run import TINY, TINY_ARGS, write_squares


def test_budget_range_parses_and_refuses_what_cannot_be_a_range():
    assert parse_budget_range("0.25:1.0") == [0.25, 1.0]
    assert parse_budget_range(None) is None
    for bad, message in (("0.5", "LO:HI"), ("a:b", "LO:HI"), ("0.2:0.4:0.6", "LO:HI"), ("0.8:0.2", "0 < LO < HI"),
                         ("0:1", "0 < LO < HI"), ("0.2:1.5", "0 < LO < HI"), ("nan:1", "0 < LO < HI"),
                         ("0.5:0.5", "0 < LO < HI")):
        with pytest.raises(AcmInputError, match=message):
            parse_budget_range(bad)
    base = dict(model="m", data="d", output="o.acm.safetensors")
    with pytest.raises(AcmInputError, match="outside --budget-range"):
        ConvertOptions(budget=0.2, budget_range=[0.25, 1.0], **base)
    with pytest.raises(AcmInputError, match="static"):
        ConvertOptions(budget=0.5, budget_range=[0.25, 1.0], static=True, **base)
    with pytest.raises(AcmInputError, match="finetune-gates"):
        ConvertOptions(budget=0.5, budget_range=[0.25, 1.0], finetune_gates=True, **base)
    with pytest.raises(AcmInputError, match="two budgets"):
        ConvertOptions(budget=0.5, budget_range=[0.25], **base)
    with pytest.raises(AcmInputError, match="give the range"):
        ConvertOptions(budget=0.5, range_skew=2.0, **base)
    for skew in (0.5, 9.0, float("nan")):
        with pytest.raises(AcmInputError, match="range-skew must lie in"):
            ConvertOptions(budget=0.5, budget_range=[0.25, 1.0], range_skew=skew, **base)


def test_step_budgets_cover_the_range_evenly_and_do_not_depend_on_resuming():
    lo, hi = 0.25, 1.0
    budgets = [step_budget(lo, hi, s, seed=0) for s in range(200)]
    assert all(lo <= b <= hi for b in budgets)
    counts, _ = np.histogram(budgets, bins=10, range=(lo, hi))
    assert counts.min() >= 15 and counts.max() <= 25  # uniform would be 20 each
    assert [step_budget(lo, hi, s, seed=0) for s in range(150, 200)] == budgets[150:]
    assert step_budget(lo, hi, 3, seed=1) != budgets[3]
    assert range_grid(0.27, 0.5) == (0.27, 0.3, 0.35, 0.4, 0.45, 0.5)
    assert report_budgets(0.25, 1.0, 0.625) == [0.25, 0.5, 0.625, 0.75, 1.0]
    assert report_budgets(0.3, 0.6, 0.5) == [0.3, 0.5, 0.6]


def test_a_skew_puts_more_fine_tuning_steps_near_the_low_end_of_the_range():
    lo, hi = 0.25, 1.0
    even = np.array([step_budget(lo, hi, s, seed=0) for s in range(1000)])
    skewed = np.array([step_budget(lo, hi, s, seed=0, skew=2.0) for s in range(1000)])
    assert np.all((skewed >= lo) & (skewed <= hi)) and skewed.max() > 0.95  # the whole range is still trained
    near_lo, near_075 = np.mean(skewed < lo + 0.1), np.mean(np.abs(skewed - 0.75) <= 0.1)
    assert abs(np.mean(even < lo + 0.1) - 0.133) < 0.01 and abs(near_lo - 0.365) < 0.01  # the docstring's figures
    assert abs(near_075 - 0.164) < 0.01
    assert [step_budget(lo, hi, s, 0, 2.0) for s in range(600, 700)] == list(skewed[600:700])  # resumable


def test_the_shift_moves_the_gates_in_training_as_at_inference():
    torch.manual_seed(0)
    acm = AcmMlp(16, 16, num_learners=4, learner_width=8, activation="gelu", min_k=0, gate_hidden=8)
    acm.gumbel_noise = 0.0
    x = torch.randn(64, 16)
    for mode in ("train", "eval"):
        getattr(acm, mode)()
        ks = {}
        for shift in (-50.0, None, 50.0):
            acm.budget_shift = shift
            acm(x)
            ks[shift] = acm.last_k.float().mean().item()
        assert ks[-50.0] == 4 and ks[50.0] == 0, (mode, ks)
        assert 0 <= ks[None] <= 4


@pytest.fixture(scope="module")
def ranged(tmp_path_factory):
    """The tiny ViT converted with --budget-range 0.25:1.0 (no --budget: the middle, 0.625), its
    fine-tuning budgets skewed towards 0.25."""
    tmp = tmp_path_factory.mktemp("range")
    npz = write_squares(tmp / "squares.npz")
    out = tmp / "vit.acm.safetensors"
    args = ["convert", TINY, "--model-args", json.dumps(TINY_ARGS), "--budget-range", "0.25:1.0", "--data", str(npz),
            "--range-skew", "2", "-o", str(out), "--max-steps", "8", "--batch-size", "32"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return {"ckpt": out, "onnx": tmp / "vit.acm.onnx", "output": r.output, "npz": npz, "tmp": tmp}


def test_a_range_model_reports_each_budget_and_keeps_its_range(ranged):
    assert "budget range: shifts measured" in ranged["output"]
    assert "fine-tuning budgets skewed towards 0.25 (--range-skew 2)" in ranged["output"]
    model = acmtool.load(ranged["ckpt"])
    info = model.acmtool_info
    assert info["budget"] == 0.625 and info["budget_range"] == [0.25, 1.0]
    table = info["budget_table"]
    assert table["budgets"][0] <= 0.25 and table["budgets"][-1] == 1.0
    report = json.loads(ranged["ckpt"].with_name("vit.report.json").read_text())
    curve = report["budget_curve"]
    assert [r["budget"] for r in curve] == [0.25, 0.5, 0.625, 0.75, 1.0]
    achieved = [r["achieved_budget"] for r in curve]
    assert achieved == sorted(achieved) and achieved[-1] == pytest.approx(1.0)
    assert all(r["eval_samples"] > 0 and "accuracy" in r["vs_original"] for r in curve)
    assert "across the trained range" in ranged["output"] and "0.62" in ranged["output"]
    assert report["convert_options"]["budget_range"] == [0.25, 1.0] and report["convert_options"]["range_skew"] == 2
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(ranged["onnx"]), load_external_data=False).metadata_props}
    assert json.loads(meta["acmtool.budget"])["trained_range"] == [0.25, 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        acmtool.set_budget(model, 0.3)  # trained for: no warning, though 0.33 below 0.625
    if table["budgets"][0] <= 0.2:
        with pytest.warns(UserWarning, match="outside the range this model was trained for"):
            acmtool.set_budget(model, 0.2)


def test_a_report_s_range_comes_back_with_config(ranged, tmp_path):
    """--config REPORT reruns the same conversion, the range included: a --budget outside it is refused."""
    report = ranged["ckpt"].with_name("vit.report.json")
    r = CliRunner().invoke(cli, ["convert", TINY, "--config", str(report), "--budget", "0.1",
                                 "-o", str(tmp_path / "y.acm.safetensors")])
    assert r.exit_code != 0 and "outside --budget-range 0.25:1" in r.output, r.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"budget_range": [0.9, 0.1]}))
    r = CliRunner().invoke(cli, ["convert", TINY, "--config", str(bad), "--data", str(ranged["npz"]),
                                 "-o", str(tmp_path / "x.acm.safetensors")])
    assert r.exit_code != 0 and "0 < LO < HI" in r.output, r.output


def test_range_training_sets_each_step_s_shift_from_its_table(ranged, monkeypatch):
    from acmtool.train import budget_range
    asked = []
    real = budget_range.budget_table

    def spy(*args, **kwargs):
        asked.append(kwargs)
        return real(*args, **kwargs)
    monkeypatch.setattr(budget_range, "budget_table", spy)
    model = acmtool.load(ranged["ckpt"])
    x = torch.from_numpy(np.load(ranged["npz"])["x"][:64])
    lines = []
    spread = RangeTraining(model, [x], 0.625, [0.25, 1.0], torch.device("cpu"), seed=0, log=lines.append, skew=2.0)
    acms = [m for _, m in acm_modules(model)]
    for step in range(6):
        spread(step, 8)
        b = step_budget(0.25, 1.0, step, 0, skew=2.0)
        want = float(shift_at(spread.table, torch.tensor(b)))
        assert all(m.budget_shift == pytest.approx(want) and m.gate.budget_delta == pytest.approx(b - 0.625)
                   for m in acms)
    assert len(lines) == 3  # steps 0, 2 and 4 of 8: a table per quarter
    # cheap tables: they only aim the steps (the model's own table comes after fine-tuning)
    assert asked and all(k["tokens"] == budget_range.REFRESH_TOKENS and k["grid"] == range_grid(0.25, 1.0)
                         for k in asked)
    spread.finish()
    assert all(m.budget_shift is None for m in acms)


def test_the_budget_curve_benchmark_puts_the_range_model_beside_a_single_budget_one(ranged):
    """benchmarks.budget_curve on the tiny ViT: the range model at three budgets, against a model
    converted at 0.5 alone, paired, timed, tabled and plotted."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from acmtool.runtime.build import find_library
    if find_library() is None:
        pytest.skip("the custom-op library is not built (make build)")
    from benchmarks import budget_curve as bc
    from benchmarks.pareto_latency import Task
    single = ranged["tmp"] / "single.acm.safetensors"
    args = ["convert", TINY, "--model-args", json.dumps(TINY_ARGS), "--budget", "0.5", "--data", str(ranged["npz"]),
            "-o", str(single), "--max-steps", "4", "--batch-size", "32"]
    assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0
    task = Task("tiny", lambda: TINY, ranged["npz"], "val")
    work = ranged["tmp"] / "curve"
    work.mkdir()
    curve, against = bc.accuracy(task, ranged["ckpt"], {0.5: single}, (0.25, 0.5, 1.0), work)
    lat = {b: bc.latency(task, ranged["ckpt"], {0.5: single}, (0.25, 0.5, 1.0), b, 3, 1, work) for b in (1, 4)}
    rows = bc.rows_of(curve, against, lat)
    assert [(r["model"][:3], r["budget"]) for r in rows] == [("one", 0.25), ("one", 0.5), ("one", 1.0), ("con", 0.5)]
    achieved = [r["achieved"] for r in rows[:3]]
    assert achieved == sorted(achieved)
    paired = rows[3]
    assert paired["knob_achieved"] == pytest.approx(rows[1]["achieved"])  # the same model, budget and samples
    assert paired["knob_minus_single"] == pytest.approx(rows[1]["accuracy"] - paired["accuracy"])
    assert all(r["latency_b1"] > 0 and r["latency_b4"] > 0 for r in rows)
    assert "knob - single" in bc.render(rows, (1, 4))
    assert bc.plot(rows, (1, 4), work / "curve.png").stat().st_size > 1000
    again, _ = bc.accuracy(task, ranged["ckpt"], {0.5: single}, (0.25, 0.5, 1.0), work, log=pytest.fail)
    assert again == curve  # cached: no evaluation the second time


def test_a_conditioned_gate_starts_as_the_plain_one_and_reads_the_budget_once_trained():
    from acmtool.layers.gate import AcmGate
    torch.manual_seed(0)
    gate = AcmGate(16, 8, 5)
    x = torch.randn(10, 16)
    plain = gate(x)
    gate.condition_on_budget()
    for delta in (None, 0.3, -0.2):
        gate.budget_delta = delta
        assert torch.equal(gate(x), plain)  # zero directions: no change
    with torch.no_grad():
        gate.budget_in.normal_()
        gate.budget_out.normal_()
    gate.budget_delta = None
    assert torch.equal(gate(x), plain)  # the trained budget: no change
    gate.budget_delta = -0.25
    assert not torch.allclose(gate(x), plain)


def test_conditioned_tables_may_shift_either_way():
    from acmtool.layers.budget_knob import check_table
    check_table({"budgets": [0.25, 0.5, 1.0], "shifts": [0.1, 0.0, 0.2], "conditioned": True})
    with pytest.raises(ValueError, match="must not rise"):
        check_table({"budgets": [0.25, 0.5, 1.0], "shifts": [0.1, 0.0, 0.2]})
    with pytest.raises(ValueError, match="true or false"):
        check_table({"budgets": [0.25, 0.5], "shifts": [0.1, 0.0], "conditioned": "yes"})


def test_a_range_model_has_budget_conditioned_gates_that_pretraining_trained(ranged):
    model = acmtool.load(ranged["ckpt"])
    assert model.acmtool_info["config"]["budget_input"] is True
    assert model.acmtool_info["budget_table"].get("conditioned") is True
    gates = [m.gate for _, m in acm_modules(model)]
    assert gates and all(g.budget_in is not None and g.budget_out is not None for g in gates)
    assert any(float(g.budget_out.abs().max()) > 0 for g in gates)


@pytest.mark.parametrize("fmt", ["custom-op", "standard"])
def test_a_range_model_s_onnx_budget_input_matches_pytorch(ranged, fmt):
    """The budget reaches the conditioned gates in the graph as in PyTorch: ORT against PyTorch
    output by output at budgets across the range, and acmtool verify."""
    model = acmtool.load(ranged["ckpt"])
    x = torch.from_numpy(np.load(ranged["npz"])["x"][:37])
    path = ranged["tmp"] / f"range-{fmt}.onnx"
    acmtool.export(model, path, example_inputs=x[:2], format=fmt, dense_above=None)
    sess = acmtool.runtime.session(path)
    for b in (None, 0.25, 0.4, 0.625, 0.9, 1.0):
        feeds = {"input": x.numpy()} | ({} if b is None else {"budget": np.array(b, np.float32)})
        with torch.no_grad(), acmtool.at_budget(model, b):
            ref = model(x).numpy()
        np.testing.assert_allclose(sess.run(None, feeds)[0], ref, atol=1e-4, rtol=0)
    r = CliRunner().invoke(cli, ["verify", str(path), str(ranged["ckpt"])], catch_exceptions=False)
    assert r.exit_code == 0 and "budget input checked at default" in r.output, r.output


def test_range_pretraining_moves_the_budget_directions_faster_than_the_rest_of_the_gate():
    """The gates' budget directions get DIRECTION_LR_GAIN x the gate learning rate, in one optimiser
    with the rest of the gate: one AdamW step moves each by about its group's rate."""
    from acmtool.train.budget_range import DIRECTION_LR_GAIN, gate_param_groups
    torch.manual_seed(0)
    acm = AcmMlp(16, 16, 4, 8, "gelu", min_k=0, gate_hidden=8)
    acm.gate.condition_on_budget()
    rest, directions = gate_param_groups([acm], 1e-3)
    assert rest["lr"] == 1e-3 and directions["lr"] == pytest.approx(1e-3 * DIRECTION_LR_GAIN)
    assert {id(p) for p in directions["params"]} == {id(acm.gate.budget_in), id(acm.gate.budget_out)}
    assert len(rest["params"]) + 2 == len(list(acm.gate.parameters()))
    opt = torch.optim.AdamW([rest, directions], lr=1e-3, weight_decay=0.0)
    before = [p.detach().clone() for p in (acm.gate.fc2.bias, acm.gate.budget_out)]
    acm.gate.budget_delta = -0.25
    acm.gate(torch.randn(32, 16)).pow(2).mean().backward()
    opt.step()
    moved = [float((p.detach() - b).abs().max()) for p, b in zip((acm.gate.fc2.bias, acm.gate.budget_out), before)]
    assert moved[0] == pytest.approx(1e-3, rel=0.05) and moved[1] == pytest.approx(1e-3 * DIRECTION_LR_GAIN, rel=0.05)
    # a gate without directions (a single-budget conversion) has none to speed up
    plain = AcmMlp(16, 16, 4, 8, "gelu", min_k=0, gate_hidden=8)
    assert gate_param_groups([plain], 1e-3)[1]["params"] == []


def test_a_range_conversion_pretrains_the_budget_directions_at_the_higher_rate(tmp_path, monkeypatch):
    """The pipeline's gate phase hands run_phase the two groups of gate_param_groups (the unit test
    above checks what the groups do; this one that a --budget-range conversion uses them)."""
    from acmtool.train import pipeline
    from acmtool.train.budget_range import DIRECTION_LR_GAIN
    seen = {}
    real = pipeline.run_phase

    def spy(name, **kwargs):
        seen[name] = (kwargs["params"], kwargs["lr"])
        return real(name, **kwargs)
    monkeypatch.setattr(pipeline, "run_phase", spy)
    npz = write_squares(tmp_path / "squares.npz")
    args = ["convert", TINY, "--model-args", json.dumps(TINY_ARGS), "--budget-range", "0.25:1.0", "--data", str(npz),
            "-o", str(tmp_path / "vit.acm.safetensors"), "--max-steps", "2", "--batch-size", "32", "--no-onnx"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    groups, lr = seen["gates"]
    assert all(isinstance(g, dict) for g in groups), "gate pre-training got plain parameters, not groups"
    assert [g["lr"] for g in groups] == [lr, pytest.approx(lr * DIRECTION_LR_GAIN)]
    blocks = len(acm_modules(acmtool.load(tmp_path / "vit.acm.safetensors")))
    assert blocks and len(groups[1]["params"]) == 2 * blocks  # budget_in and budget_out of every gate
    assert not {id(p) for p in groups[1]["params"]} & {id(p) for p in groups[0]["params"]}
