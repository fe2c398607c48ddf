"""benchmarks.oracle_gates: the ACM run with the loss-aware labels of its own batch as each token's k."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.io.sources import load_original
from acmtool.layers.acm import acm_modules
from acmtool.train.capture import SiteCapture
from acmtool.train.losses import loss_aware_gate_labels
from benchmarks.oracle_gates import OracleGates, main
from tiny_run import convert_args, write_squares


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oracle")
    npz = write_squares(tmp / "squares.npz", n=240)
    out = tmp / "vit.acm.safetensors"
    r = CliRunner().invoke(cli, convert_args(npz, out, "--max-steps", 3, "--batch-size", 32, "--no-onnx"),
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return {"ckpt": out, "npz": npz, "tmp": tmp}


def test_each_token_runs_the_k_its_label_gives(converted):
    torch.manual_seed(0)
    student = acmtool.load(converted["ckpt"]).eval()
    teacher = load_original(student.acmtool_info["source"]).eval()
    x = torch.from_numpy(np.load(converted["npz"])["x"][:8])
    oracle = OracleGates(student, teacher, 0.5, None, probes=2, seed=0)
    out = oracle(x)
    assert out.shape == (8, 4)
    # the same labels, from a capture with the same probe seed
    _, caps = SiteCapture(teacher, student, "mlp")(x, sensitivity=True, generator=torch.Generator().manual_seed(0),
                                                   probes=2)
    acms = dict(acm_modules(student))
    want = loss_aware_gate_labels([acms[n] for n in caps], list(caps.values()), 0.5)
    for (name, acm), labels in zip(((n, acms[n]) for n in caps), want):
        assert torch.equal(acm.last_k.reshape(-1), labels + acm.min_k), name
        assert acm.replay_k is None  # cleared after the call


def test_the_benchmark_scores_gates_oracle_and_uniform_on_the_same_samples(converted, capsys):
    path = converted["tmp"] / "oracle.json"
    main([str(converted["ckpt"]), "--data", converted["npz"], "--split", "val", "--probes", "1", "--uniform",
          "--json", str(path)])
    r = json.loads(path.read_text())
    assert r["uniform_k"] == 2  # 0.5 x 4 learners
    assert abs(r["oracle"]["achieved_budget"] - 0.5) < 0.05  # the labels spend the budget
    assert r["uniform"]["achieved_budget"] == pytest.approx(0.5)
    for key in ("oracle_vs_gates", "uniform_vs_gates", "uniform_vs_oracle"):
        assert {"accuracy"} <= set(r[key]) and r[key]["accuracy"]["n"] == r["gates"]["eval_samples"]
    assert "oracle - gates" in capsys.readouterr().out


def test_a_static_checkpoint_is_refused(tmp_path):
    npz = write_squares(tmp_path / "squares.npz", n=120)
    out = tmp_path / "static.acm.safetensors"
    r = CliRunner().invoke(cli, convert_args(npz, out, "--max-steps", 2, "--static", "--no-onnx"),
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    with pytest.raises(SystemExit, match="gated ACM checkpoint"):
        main([str(out), "--data", npz, "--split", "val"])
