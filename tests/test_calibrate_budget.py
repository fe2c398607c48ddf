"""calibrate_budget: the budget a model really spends after the shift, where one gate's choices move
the next gate's inputs (acmtool.train.calibrate_budget)."""
import pytest
import torch
import torch.nn as nn

from acmtool.layers import AcmMlp
from acmtool.train.calibrate_budget import _fresh, _proposal, calibrate_budget, shift_gates

SHARP = 4.0  # the gates' logits per unit of their input: choices flip over a narrow range


def _block(dout_weight: int, reads: int, sign: float, threshold: float) -> AcmMlp:
    """4 learners of width `dout_weight` (its FLOPs weight in the budget), each adding 1 to feature 0;
    a gate that gives all learners or none, all where sign * (x[reads] - threshold) > 0."""
    m = AcmMlp(2, 2, 4, dout_weight, "relu", min_k=0, gate_hidden=1)
    with torch.no_grad():
        m.b1.fill_(1.0)  # every hidden unit outputs 1
        m.w2.zero_()
        m.w2[:, :, 0] = 1.0 / dout_weight  # each learner adds 1 to feature 0
        g = m.gate
        g.fc1.weight.zero_()
        g.fc1.weight[0, reads] = sign
        g.fc1.bias.fill_(10.0 - sign * threshold)  # gelu is the identity up there
        ks = torch.arange(5, dtype=torch.float32)
        g.fc2.weight[:, 0] = SHARP * ks
        g.fc2.bias.copy_(-SHARP * ks * 10.0)  # logit_k = SHARP * k * sign * (x - threshold)
    return m.eval()


class Chained(nn.Module):
    """Two residual ACM blocks: the second gives its learners to the tokens the first skipped."""

    def __init__(self):
        super().__init__()
        self.first = _block(5, reads=1, sign=1.0, threshold=0.5)  # all learners where u > 0.5
        self.second = _block(4, reads=0, sign=-1.0, threshold=2.0)  # where feature 0 < 2

    def forward(self, x):
        y = x + self.first(x)
        return y + self.second(y)


def _data():
    g = torch.Generator().manual_seed(0)
    u = torch.rand(400, generator=g)
    return [torch.stack([torch.zeros_like(u), u], -1)]


def test_the_spend_is_measured_again_where_the_gates_move_each_others_inputs():
    # spend = (5 p + 4 (1 - p)) / 9 where the first block runs p of the tokens and the second the
    # rest: four fifths of each shift the logits propose are undone downstream
    torch.manual_seed(0)
    model, batches, target = Chained(), _data(), 0.55
    acms = {"first": model.first, "second": model.second}
    assert _fresh(model, acms, batches, "cpu")[1] == pytest.approx(0.5, abs=0.03)

    # what calibration did before: two proposals, each from the logits the last shift caused
    trial = Chained()
    trial_acms = {"first": trial.first, "second": trial.second}
    for _ in range(2):
        logits, _ = _fresh(trial, trial_acms, batches, "cpu")
        shift_gates(trial_acms, _proposal(trial, trial_acms, logits, target))
    assert abs(_fresh(trial, trial_acms, batches, "cpu")[1] - target) > 0.03  # 0.5175

    result = calibrate_budget(model, batches, target, "cpu")
    got = _fresh(model, acms, batches, "cpu")[1]
    assert got == pytest.approx(result["budget"], abs=1e-9)  # the budget it reports is the one spent
    assert got == pytest.approx(target, abs=0.02)


def test_a_model_without_feedback_needs_few_passes():
    torch.manual_seed(0)
    model = _block(1, reads=1, sign=1.0, threshold=0.5)
    batches = _data()
    result = calibrate_budget(model, batches, 0.3, "cpu")
    assert result["budget"] == pytest.approx(0.3, abs=0.01)
    assert result["passes"] <= 2
    assert _fresh(model, {"": model}, batches, "cpu")[1] == pytest.approx(result["budget"], abs=1e-9)
