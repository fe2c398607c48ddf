"""`acmtool eval CKPT --baseline OTHER`: both checkpoints on the same samples, the original run
once, ACM - original and ACM - baseline with their paired standard errors; refused for
checkpoints of different originals or different data splits."""
import json

import pytest
import torch
from click.testing import CliRunner
from tiny_run import TINY, TINY_ARGS, write_squares

import acmtool
from acmtool.cli.main import cli
from acmtool.io.checkpoint import save
from acmtool.train.evaluate_checkpoint import evaluate_checkpoint
from acmtool.train.options import ConvertOptions
from acmtool.train.pipeline import convert


def options(npz, out, **kw):
    base = {"model": TINY, "model_args": TINY_ARGS, "budget": 0.5, "data": npz, "output": str(out), "max_steps": 4,
            "batch_size": 32, "distill_epochs": 1, "gate_epochs": 1, "finetune_epochs": 1, "checkpoint_minutes": 60,
            "onnx": False}
    return ConvertOptions(**{**base, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("baseline")
    npz = write_squares(folder / "squares.npz")
    acm, static = folder / "acm.acm.safetensors", folder / "static.acm.safetensors"
    convert(options(npz, acm))
    convert(options(npz, static, static=True))
    return {"npz": npz, "acm": acm, "static": static, "folder": folder}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_eval_with_a_baseline_prints_and_writes_the_paired_differences(runs):
    out = runs["folder"] / "eval.json"
    r = run("eval", runs["acm"], "--data", runs["npz"], "--baseline", runs["static"], "--json", out)
    assert r.exit_code == 0, r.output
    got = json.loads(out.read_text())
    base = got["baseline"]
    assert got["eval_samples"] == base["eval_samples"] == 40 and not got["static"] and base["static"]
    assert got["teacher_accuracy"] == base["teacher_accuracy"]  # the same original on the same samples
    for report in (got, base):
        vs = report["vs_original"]["accuracy"]
        assert vs["n"] == 40 and vs["diff"] == pytest.approx(report["student_accuracy"] - report["teacher_accuracy"])
    d = got["vs_baseline"]["accuracy"]
    assert d["diff"] == pytest.approx(got["student_accuracy"] - base["student_accuracy"])
    assert d["n"] == 40 and d["a_only"] - d["b_only"] == round(40 * d["diff"])
    assert d["se"] == pytest.approx((d["a_only"] + d["b_only"] - (d["a_only"] - d["b_only"]) ** 2 / 40) ** 0.5 / 40)
    text = r.output
    assert f"accuracy: ACM - static {100 * d['diff']:+.2f} +- {100 * d['se']:.2f} points (n = 40)" in text
    vs = got["vs_original"]["accuracy"]
    assert f"accuracy: ACM - original {100 * vs['diff']:+.2f} +- {100 * vs['se']:.2f} points (n = 40)" in text
    assert "accuracy: static - original" in text
    warnings = [line for line in text.splitlines() if "hard to tell from noise" in line]
    assert len(warnings) == 1 and "only 40 evaluation samples" in warnings[0]
    # the same figures as each checkpoint evaluated on its own
    alone = evaluate_checkpoint(runs["static"], runs["npz"])
    assert alone["student_accuracy"] == base["student_accuracy"]
    assert alone["achieved_budget"] == pytest.approx(base["achieved_budget"])


def test_the_pairing_is_per_sample_and_in_the_same_order(runs):
    """A baseline that answers differently (its head replaced by a seeded random one): the paired
    counts are those of the two models' per-sample correctness, computed independently."""
    from acmtool.train.paired import paired_accuracy_difference
    from benchmarks.paired import correct
    model = acmtool.load(runs["static"])
    with torch.no_grad():
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(0)))
    biased = runs["folder"] / "biased.acm.safetensors"
    save(model, biased)
    got = evaluate_checkpoint(runs["acm"], runs["npz"], baseline=biased)
    expected = paired_accuracy_difference(correct(runs["acm"], runs["npz"], split="val"),
                                          correct(biased, runs["npz"], split="val"))
    assert expected["a_only"] + expected["b_only"] > 0  # the two models do differ
    assert got["vs_baseline"]["accuracy"] == pytest.approx(expected)
    assert got["baseline"]["vs_original"]["accuracy"]["diff"] == pytest.approx(
        got["baseline"]["student_accuracy"] - got["teacher_accuracy"])


def test_eval_without_a_baseline_reports_against_the_original(runs):
    r = run("eval", runs["acm"], "--data", runs["npz"])
    assert r.exit_code == 0, r.output
    assert "accuracy: ACM - original" in r.output and "ACM - static" not in r.output
    assert "On the val split of" in r.output and "(40 samples)" in r.output


def test_a_baseline_of_another_original_is_refused(runs):
    other = runs["folder"] / "other.acm.safetensors"
    r = run("convert", TINY, "--model-args", json.dumps({**TINY_ARGS, "depth": 1}), "--no-onnx", "-o", other)
    assert r.exit_code == 0, r.output
    r = run("eval", runs["acm"], "--data", runs["npz"], "--baseline", other)
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "another original model" in lines[0] and "other settings or weights" in lines[0]


def test_a_baseline_converted_on_another_split_is_refused_on_val(runs):
    model = acmtool.load(runs["static"])
    model.acmtool_info["report"]["options"]["seed"] = 1
    moved = runs["folder"] / "seed1.acm.safetensors"
    save(model, moved)
    r = run("eval", runs["acm"], "--data", runs["npz"], "--baseline", moved)
    assert r.exit_code == 2 and "different data splits (seed 0 vs 1)" in r.output and "--split test" in r.output
