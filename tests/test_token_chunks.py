"""Batches with far more tokens than a step needs (Whisper's encoder: 48000 per batch) are split
into parts, one optimiser update each; every token is used once; small batches are one step."""
import copy

import pytest
import torch
import torch.nn as nn

from acmtool.config import AcmConfig
from acmtool.convert.acmize import acmize_
from acmtool.layers.acm import acm_modules
from acmtool.train.capture import SiteCapture
from acmtool.train.distributed import DistContext
from acmtool.train.loop import GracefulStop, run_phase
from acmtool.train.objectives import GateObjective
from acmtool.train.token_chunks import token_chunks


def _caps(rows: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    return {n: (torch.randn(r, 6, generator=g), torch.arange(r).float()[:, None]) for n, r in rows.items()}


def test_a_batch_within_the_limit_is_one_step():
    assert token_chunks(_caps({"a": 100, "b": 7}), 100, torch.Generator().manual_seed(0)) is None


def test_parts_partition_every_block_and_small_blocks_repeat_whole():
    caps = _caps({"enc": 1000, "dec": 3})
    chunks = token_chunks(caps, 300, torch.Generator().manual_seed(1))
    assert len(chunks) == 4  # ceil(1000 / 300)
    enc = torch.cat([c[0] for c in chunks])
    assert sorted(enc.tolist()) == list(range(1000))  # each encoder token in exactly one part
    assert all(len(c[0]) <= 300 for c in chunks)
    dec = [sorted(c[1].tolist()) for c in chunks]
    assert sorted(sum(dec[:3], [])) == [0, 1, 2] and dec[3] == [0, 1, 2]  # 1 each, then the whole block


def test_parts_are_seeded():
    caps = _caps({"enc": 500})
    a = token_chunks(caps, 100, torch.Generator().manual_seed(3))
    b = token_chunks(caps, 100, torch.Generator().manual_seed(3))
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(limit):
    with pytest.raises(ValueError, match="at least 1"):
        token_chunks(_caps({"a": 3}), limit, None)


class _Run:
    data: dict = {}

    def due(self, minutes):
        return False


def test_run_phase_makes_one_update_per_part_and_one_schedule_step_per_batch():
    w = nn.Parameter(torch.zeros(()))
    updates = []

    def objective(batch):
        return ((w * 0 + (w - t) ** 2, {"part": float(t)}) for t in batch)
    loader = torch.utils.data.DataLoader([[1.0, 2.0, 3.0]], batch_size=None)
    with GracefulStop() as stop:
        hist = run_phase("p", objective=objective, params=[w], steps=3, lr=0.1, loader=loader,
                         run_state=_Run(), student=nn.Linear(1, 1), ctx=DistContext(), stop=stop,
                         checkpoint_minutes=60, after_step=lambda stats, step, steps: updates.append(stats))
    assert len(updates) == 3 and updates[0] == {"part": 2.0}  # the mean over the batch's parts
    assert hist["part"] == pytest.approx(2.0) and float(w) > 0.1  # nine updates moved w towards 2


def test_gate_steps_on_parts_use_the_batch_labels(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    teacher = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=32,
                                depth=2, num_heads=2, num_classes=5).eval().requires_grad_(False)
    student = copy.deepcopy(teacher)
    acmize_(student, AcmConfig(num_learners=4, targets="mlp"), calibration=None, init=False)
    acms = dict(acm_modules(student))
    _, caps = SiteCapture(teacher, student, "mlp")(torch.randn(6, 3, 32, 32), sensitivity=True)
    objective = GateObjective(acms, 0.83, "loss", 0.5)
    prepared = objective.prepare(caps)
    chunks = token_chunks(caps, 40, torch.Generator().manual_seed(0))  # 6 x 17 = 102 tokens: 3 parts
    assert len(chunks) == 3
    whole, _ = objective(caps, prepared)
    parts = [objective(caps, prepared, rows)[0] for rows in chunks]
    sizes = [len(rows[0]) for rows in chunks]
    # cross-entropy and regret are means over tokens: the parts' token-weighted mean is the whole
    mean = sum(float(p) * n for p, n in zip(parts, sizes)) / sum(sizes)
    assert mean == pytest.approx(float(whole), rel=1e-5)


def test_a_conversion_splits_large_batches_into_parts(tmp_path, monkeypatch):
    """The pipeline with tiny limits: every distillation and gate batch is split, and the run
    completes with gates that learned (a label accuracy above chance is not asked: 2 steps)."""
    from click.testing import CliRunner

    from acmtool.cli.main import cli
    from acmtool.train import pipeline
    from tiny_run import convert_args, write_squares
    seen = []

    def spy(caps, limit, generator, ctx=None):
        got = token_chunks(caps, limit, generator, ctx)
        seen.append((limit, len(got) if got else 1))
        return got
    monkeypatch.setattr(pipeline, "token_chunks", spy)
    monkeypatch.setattr(pipeline, "DISTILL_TOKENS", 64)
    monkeypatch.setattr(pipeline, "GATE_TOKENS", 32)
    npz = write_squares(tmp_path / "squares.npz", n=120)
    r = CliRunner().invoke(cli, convert_args(npz, tmp_path / "m.acm.safetensors", "--max-steps", 2, "--batch-size", 8,
                                             "--no-onnx"), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert {limit for limit, _ in seen} == {64, 32}
    assert all(parts > 1 for _, parts in seen)
