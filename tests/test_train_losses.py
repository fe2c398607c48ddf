"""The phases' losses and gate labels (acmtool.train.losses)."""
import pytest
import torch

from acmtool.layers import AcmMlp, AcmProjection
from acmtool.train.losses import (
    batch_budget,
    budget_gate_labels,
    diversity_loss,
    entropy_loss,
    gate_choice_probs,
    gate_labels,
    prefix_distillation_loss,
    prefix_weights,
)
from acmtool.train.tokens import real_tokens


def make(cls=AcmMlp, n=4, din=12, h=5, dout=9, min_k=0, act="gelu", bias=True):
    m = cls(din, dout, n, h, act, min_k=min_k, gate_hidden=8, bias1=bias, bias2=bias)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


def test_prefix_distillation_is_zero_only_when_every_prefix_matches():
    m = make()
    z = torch.randn(7, 12)
    full = m.forward_k(z, 4)
    assert prefix_distillation_loss(m, z, full) > 0  # prefixes 1..3 differ from h(z, 4)
    with torch.no_grad():  # learners 2..4 silent: every prefix k >= 1 is h(z, 1)
        m.w2[1:].zero_()
    assert float(prefix_distillation_loss(m, z, m.forward_k(z, 1)).detach()) == pytest.approx(0.0, abs=1e-10)


def test_prefix_distillation_reaches_every_learner_from_every_prefix():
    m = make()
    z = torch.randn(7, 12)
    prefix_distillation_loss(m, z, torch.randn(7, 9)).backward()
    assert all(float(m.w2.grad[i].abs().sum()) > 0 for i in range(4))


@pytest.mark.parametrize("cls,min_k,act", [(AcmMlp, 0, "gelu"), (AcmProjection, 1, "identity")])
def test_the_full_prefix_weighs_as_much_as_the_shorter_ones_together(cls, min_k, act):
    torch.manual_seed(0)
    m = make(cls, min_k=min_k, act=act)
    z, target = torch.randn(7, 12), torch.randn(7, 9)
    errors = [float((m.forward_k(z, k) - target).pow(2).mean()) for k in range(max(min_k, 1), 5)]
    scale = float(target.pow(2).mean())
    shorter, full = sum(errors[:-1]), errors[-1]
    anchored = (shorter + (len(errors) - 1) * full) / (2 * (len(errors) - 1)) / scale
    assert float(prefix_distillation_loss(m, z, target).detach()) == pytest.approx(anchored, rel=1e-5)
    alike = sum(errors) / len(errors) / scale
    assert float(prefix_distillation_loss(m, z, target, "even").detach()) == pytest.approx(alike, rel=1e-5)


def test_a_single_prefix_is_its_own_loss():
    torch.manual_seed(0)
    m = make(min_k=4)  # only k = N: nothing to anchor against
    z, target = torch.randn(7, 12), torch.randn(7, 9)
    expected = float((m.forward_k(z, 4) - target).pow(2).mean() / target.pow(2).mean())
    assert float(prefix_distillation_loss(m, z, target).detach()) == pytest.approx(expected, rel=1e-5)


def _distil(weighting: str, steps: int = 60, budget=None) -> tuple[float, float]:
    """Distil an ACM whose learners start as an exact split of its target MLP; returns the relative
    error of the full prefix and of the first one afterwards."""
    torch.manual_seed(0)
    teacher = make()
    m = make()
    m.load_state_dict(teacher.state_dict())
    z = torch.randn(256, 12)
    target = teacher.forward_k(z, 4).detach()
    opt = torch.optim.Adam([m.w1, m.b1, m.w2], lr=3e-2)
    for _ in range(steps):
        opt.zero_grad()
        prefix_distillation_loss(m, z, target, weighting, budget).backward()
        opt.step()
    with torch.no_grad():
        rel = [float((m.forward_k(z, k) - target).pow(2).mean() / target.pow(2).mean()) for k in (4, 1)]
    return rel[0], rel[1]


def test_the_anchor_keeps_the_full_prefix_near_the_original():
    # equal weights trade h(z, N) = f(z), exact at the start, for the short prefixes
    full_alike, first_alike = _distil("even")
    full_anchored, first_anchored = _distil("anchor")
    assert full_alike > 0.01
    assert full_anchored < 0.85 * full_alike  # 0.036 against 0.047 here
    assert first_anchored < 0.5  # the short prefixes still learn: h(z, 1) starts at 0.78


@pytest.mark.parametrize("budget", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("cls,min_k,act", [(AcmMlp, 0, "gelu"), (AcmProjection, 1, "identity")])
def test_usage_weights_are_half_even_half_the_budget_labels_shares(budget, cls, min_k, act):
    torch.manual_seed(0)
    m = make(cls, min_k=min_k, act=act)
    z = torch.randn(300, 12)
    target = m.forward_k(z, 4) + 0.05 * torch.randn(300, 9)
    first = max(min_k, 1)
    ks = budget_gate_labels(m, z, target, budget) + min_k
    share = torch.tensor([float((ks == k).float().mean()) for k in range(first, 5)])
    weights = prefix_weights(m, m.forward_prefixes(z), target, "usage", budget)
    assert torch.allclose(weights, 1 / (5 - first) + share, atol=1e-6)
    errors = torch.stack([(m.forward_k(z, k) - target).pow(2).mean() for k in range(first, 5)])
    expected = float((errors * weights).sum() / weights.sum() / target.pow(2).mean())
    got = prefix_distillation_loss(m, z, target, "usage", budget)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)
    if budget == 1.0:  # every token may take every learner: the usage half is all on h(z, N)
        assert float(weights[-1]) == pytest.approx(1 / (5 - first) + 1, rel=1e-6)


def test_prefix_weights_refuse_an_unknown_weighting_or_usage_without_a_budget():
    m = make()
    z, target = torch.randn(7, 12), torch.randn(7, 9)
    for weighting, budget in (("mean", 0.5), ("usage", None)):
        with pytest.raises(ValueError, match="prefix weighting"):
            prefix_weights(m, m.forward_prefixes(z), target, weighting, budget)


def test_usage_weights_serve_the_prefixes_a_low_budget_uses():
    # at 0.25 most tokens get k = 1: weighing prefixes by use leaves h(z, 1) closer to the target
    # than the anchor does, which spends half the weight on h(z, N)
    full_anchored, first_anchored = _distil("anchor")
    full_usage, first_usage = _distil("usage", budget=0.25)
    assert first_usage < 0.9 * first_anchored
    assert full_usage > full_anchored  # the price: the full prefix, which few tokens run


@pytest.mark.parametrize("budget", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("cls,min_k,act", [(AcmMlp, 0, "gelu"), (AcmProjection, 1, "identity")])
def test_budget_labels_spend_the_budget(budget, cls, min_k, act):
    m = make(cls, min_k=min_k, act=act)
    z = torch.randn(400, 12)
    target = m.forward_k(z, 4) + 0.01 * torch.randn(400, 9)
    labels = budget_gate_labels(m, z, target, budget)
    assert labels.shape == (400,) and labels.min() >= 0 and labels.max() <= 4 - min_k
    spent = float((labels.float() + min_k).mean() / 4)
    assert spent <= budget + 1e-6 and spent > budget - 0.05  # as close as the discrete choices allow
    if budget * 4 > min_k:  # a choice to make: tokens differ in how fast their error falls
        assert len(labels.unique()) > 1


def test_budget_labels_do_not_give_large_tokens_every_learner():
    # identity learners without biases: h(c z) = c h(z), so a token scaled up by 100 has the same
    # relative errors and must get the same k; with absolute errors it would take every learner
    m = make(AcmMlp, act="identity", bias=False)
    z = torch.randn(200, 12)
    target = m.forward_k(z, 4) + 0.1 * torch.randn(200, 9)
    plain = budget_gate_labels(m, z, target, 0.5)
    scale = torch.ones(200, 1)
    scale[:20] = 100.0
    scaled = budget_gate_labels(m, z * scale, target * scale, 0.5)
    assert torch.equal(plain, scaled)


def test_budget_labels_with_tiny_outputs_still_spend_the_budget():
    m = make()
    z = torch.randn(300, 12)
    target = m.forward_k(z, 4) + 0.05 * torch.randn(300, 9)
    target[:30] = 0  # blocks that output nothing for some tokens
    labels = budget_gate_labels(m, z, target, 0.5)
    spent = float(labels.float().mean() / 4)
    assert 0.45 < spent <= 0.5 + 1e-6
    assert float(labels[:30].float().mean()) < float(labels[30:].float().mean())  # nothing to learn there


def test_real_tokens_leave_padding_out():
    t = torch.arange(24.0).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert real_tokens(t, mask).tolist() == [t[0, 0].tolist(), t[0, 1].tolist(), t[1, 0].tolist()]
    assert real_tokens(t, None).shape == (6, 4)
    assert real_tokens(t, torch.ones(2, 5)).shape == (6, 4)  # a mask of other tokens: all of them
    assert real_tokens(t, torch.zeros(2, 3)).shape == (0, 4)


def test_budget_and_gate_probs_count_real_tokens_only():
    m = make()
    all_k = torch.nn.functional.one_hot(torch.full((2, 3), 4), 5).float()
    all_k[0, 2] = torch.nn.functional.one_hot(torch.tensor(0), 5).float()  # a padding token at k = 0
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert float(batch_budget([m], [all_k], mask)) == pytest.approx(1.0)
    assert float(batch_budget([m], [all_k])) == pytest.approx(5 / 6)
    m.last_logits = torch.randn(2, 3, 5)
    assert gate_choice_probs(m, mask).shape == (5, 5)


def test_tau_labels_stop_where_the_next_learner_stops_helping():
    m = make(act="identity", bias=False)
    with torch.no_grad():
        m.w1[1], m.w2[1] = m.w1[0], m.w2[0]  # learner 2 repeats learner 1: each cuts the error 4x
        m.w2[2:].zero_()  # learners 3 and 4 add nothing
    z = torch.randn(50, 12)
    target = m.forward_k(z, 2)  # two learners reproduce the target exactly
    labels = gate_labels(m, z, target, tau=0.83)
    assert torch.all(labels == 2)


def test_batch_budget_weighs_acms_by_their_flops():
    small, big = make(h=2), make(h=6)
    onehot_all = torch.nn.functional.one_hot(torch.full((10,), 4), 5).float()
    onehot_none = torch.nn.functional.one_hot(torch.zeros(10, dtype=torch.long), 5).float()
    beta = batch_budget([small, big], [onehot_none, onehot_all])
    assert float(beta) == pytest.approx(big.flops_at(4) / (small.flops_at(4) + big.flops_at(4)))


def test_batch_budget_weighs_acms_by_their_tokens_too():
    # an encoder-decoder: the encoder's ACM sees 30 tokens at k = N, the decoder's 2 at k = 0; the
    # budget is the share of learner FLOPs spent, so the encoder's tokens weigh 15 times as much
    enc, dec = make(h=4), make(h=4)
    all_k = torch.nn.functional.one_hot(torch.full((30,), 4), 5).float()
    none = torch.nn.functional.one_hot(torch.zeros(2, dtype=torch.long), 5).float()
    assert float(batch_budget([enc, dec], [all_k, none])) == pytest.approx(30 / 32)
    # an ACM no real token reached counts for nothing (a fully padded decoder batch)
    assert float(batch_budget([enc, dec], [all_k, none[:0]])) == pytest.approx(1.0)
    assert float(batch_budget([dec], [none[:0]])) == 0.0


def test_entropy_and_diversity_are_normalised():
    decisive = torch.nn.functional.one_hot(torch.arange(10) % 5, 5).float()  # each token sure, batch spread
    uniform = torch.full((10, 5), 0.2)
    assert float(entropy_loss([decisive])) == pytest.approx(0.0, abs=1e-6)
    assert float(entropy_loss([uniform])) == pytest.approx(1.0, abs=1e-6)
    assert float(diversity_loss([decisive])) == pytest.approx(-1.0, abs=1e-6)
    same = torch.nn.functional.one_hot(torch.zeros(10, dtype=torch.long), 5).float()
    assert float(diversity_loss([same])) == pytest.approx(0.0, abs=1e-6)
