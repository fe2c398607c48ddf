"""AcmModule: every forward mode against the reference formula."""
import pytest
import torch

from acmtool.layers import AcmMlp, AcmProjection, fixed_k, set_impl
from acmtool.ops import dynamic_learners_reference


def make(cls=AcmMlp, n=4, din=10, h=6, dout=8, min_k=0, act="gelu", bias1=True):
    m = cls(din, dout, n, h, act, min_k=min_k, gate_hidden=8, bias1=bias1)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


def test_forward_k_matches_reference_for_every_k():
    m = make()
    x = torch.randn(2, 3, 10)
    for k in range(5):
        ref = dynamic_learners_reference(x, torch.full((2, 3), k), m.w1, m.b1, m.w2, m.b2, m.activation)
        torch.testing.assert_close(m.forward_k(x, k), ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="k must lie"):
        m.forward_k(x, 5)


def test_prefixes_are_every_h_x_k():
    m = make()
    x = torch.randn(5, 10)
    prefixes = m.forward_prefixes(x)
    assert prefixes.shape == (5, 5, 8)
    for k in range(5):
        torch.testing.assert_close(prefixes[k], m.forward_k(x, k), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["grouped", "naive"])
@pytest.mark.parametrize("cls,min_k,act", [(AcmMlp, 0, "gelu"), (AcmProjection, 1, "identity")])
def test_eval_runs_argmax_plus_min_k_learners(impl, cls, min_k, act):
    m = make(cls, min_k=min_k, act=act).eval()
    m.impl = impl
    x = torch.randn(4, 7, 10)
    y = m(x)
    k = m.gate(x).argmax(-1) + min_k
    assert torch.equal(m.last_k, k)
    assert int(k.min()) >= min_k and int(k.max()) <= 4
    assert len(k.unique()) > 1, "random gate should pick several k"
    ref = dynamic_learners_reference(x, k, m.w1, m.b1, m.w2, m.b2, act)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)


def test_training_forward_is_sum_of_onehot_times_prefix_and_reaches_the_gate():
    m = make(min_k=0).train()
    x = torch.randn(6, 10)
    torch.manual_seed(3)
    y = m(x)
    k = m.last_k
    prefixes = m.forward_prefixes(x)
    expected = prefixes[k, torch.arange(6)]
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    y.pow(2).sum().backward()
    assert m.gate.fc2.weight.grad is not None and m.gate.fc2.weight.grad.abs().sum() > 0
    assert m.w1.grad.abs().sum() > 0
    assert m.last_logits is not None and m.last_logits.shape == (6, 5)


def test_training_with_min_k_one_never_goes_below():
    m = make(AcmProjection, min_k=1, act="identity", bias1=False).train()
    m(torch.randn(50, 10))
    assert int(m.last_k.min()) >= 1


def test_fixed_k_clamps_and_restores():
    mlp, proj = make(), make(AcmProjection, min_k=1, act="identity", bias1=False)
    model = torch.nn.Sequential(mlp, torch.nn.Linear(8, 10), proj).eval()
    x = torch.randn(3, 10)
    with fixed_k(model, 0):
        assert mlp.forced_k == 0 and proj.forced_k == 1
        model(x)
        assert int(mlp.last_k.max()) == 0 and int(proj.last_k.min()) == 1
    with fixed_k(model, 99):
        assert mlp.forced_k == 4 and proj.forced_k == 4
    assert mlp.forced_k is None and proj.forced_k is None


def test_set_impl_grouped_equals_naive_on_a_model():
    # float64: the two paths sum in different orders, and float32 rounding of values near 100 once
    # put one element 1.5e-5 apart on a clean clone (the paths, not the seed, decide the order)
    model = torch.nn.Sequential(make(), torch.nn.GELU(), make(din=8)).double().eval()
    x = torch.randn(3, 11, 10, dtype=torch.float64)
    set_impl(model, "naive")
    a = model(x)
    set_impl(model, "grouped")
    b = model(x)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    with pytest.raises(ValueError):
        set_impl(model, "fast")


def test_untrained_gate_prefers_all_learners():
    from acmtool.layers import AcmGate
    g = AcmGate(16, 8, 5)
    assert torch.all(g(torch.randn(100, 16)).argmax(-1) == 4)


def test_costs():
    m = make(n=4, din=10, h=6, dout=8)
    assert m.learner_flops() == 2 * 6 * (10 + 8)
    assert m.flops_at(2) == 2 * m.learner_flops()
    assert m.gate_flops() == 2 * (10 * 8 + 8 * 5)


def test_hard_gumbel_softmax_noise_scales():
    from acmtool.layers.acm import hard_gumbel_softmax
    logits = torch.randn(200, 5, requires_grad=True)
    plain = hard_gumbel_softmax(logits, 0.8, noise=0.0)
    assert torch.equal(plain.argmax(-1), logits.argmax(-1)) and torch.all(plain.sum(-1) == 1)
    (plain * torch.arange(5.0)).sum().backward()
    assert logits.grad.abs().sum() > 0  # the straight-through gradient reaches the logits
    noisy = hard_gumbel_softmax(logits.detach(), 0.8, noise=1.0)
    assert (noisy.argmax(-1) != logits.argmax(-1)).any()


def test_training_gate_reads_a_detached_token():
    # the task loss may train the gate, but must not teach the model upstream to steer it
    m = make().train()
    seen = []
    m.gate.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].requires_grad))
    x = torch.randn(6, 10, requires_grad=True)
    m(x).sum().backward()
    assert seen == [False]
    assert m.gate.fc1.weight.grad is not None and float(m.gate.fc1.weight.grad.abs().sum()) > 0
    assert x.grad is not None  # the learners still pass gradients upstream
