"""The grouped path against the reference, over the edge cases of the operator."""
import pytest
import torch

from acmtool.ops import ACTIVATIONS, dynamic_learners_grouped, dynamic_learners_reference
from acmtool.ops.activations import apply_activation


def weights(n=4, din=12, h=5, dout=7, bias1=True, bias2=True, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    w1 = torch.randn(n, din, h, generator=g, dtype=dtype)
    b1 = torch.randn(n, h, generator=g, dtype=dtype) if bias1 else None
    w2 = torch.randn(n, h, dout, generator=g, dtype=dtype)
    b2 = torch.randn(dout, generator=g, dtype=dtype) if bias2 else None
    return w1, b1, w2, b2


def loop_reference(x, k, w1, b1, w2, b2, act):
    """DESIGN.md's formula, token by token: the reference of the reference."""
    xf, kf = x.reshape(-1, x.shape[-1]), k.reshape(-1)
    out = []
    for t in range(xf.shape[0]):
        y = b2.clone() if b2 is not None else torch.zeros(w2.shape[2])
        for i in range(int(kf[t])):
            hid = xf[t] @ w1[i] + (b1[i] if b1 is not None else 0)
            y = y + apply_activation(hid, act) @ w2[i]
        out.append(y)
    return torch.stack(out).reshape(*x.shape[:-1], w2.shape[2]) if out else torch.zeros(*x.shape[:-1], w2.shape[2])


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_reference_matches_formula(act):
    w = weights()
    x = torch.randn(3, 5, 12)
    k = torch.randint(0, 5, (3, 5))
    torch.testing.assert_close(dynamic_learners_reference(x, k, *w, act), loop_reference(x, k, *w, act))


@pytest.mark.parametrize("act", ACTIVATIONS)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (2, 9), (3, 1, 5), (2, 0, 4)])
@pytest.mark.parametrize("k_mode", ["zero", "full", "mixed", "one_value"])
@pytest.mark.parametrize("biases", [(True, True), (False, True), (True, False), (False, False)])
def test_grouped_matches_reference(act, shape, k_mode, biases):
    n = 4
    w = weights(n=n, bias1=biases[0], bias2=biases[1])
    x = torch.randn(*shape, 12)
    k = {"zero": torch.zeros(shape, dtype=torch.long), "full": torch.full(shape, n, dtype=torch.long),
         "mixed": torch.randint(0, n + 1, shape), "one_value": torch.full(shape, 2, dtype=torch.long)}[k_mode]
    ref = dynamic_learners_reference(x, k, *w, act)
    got = dynamic_learners_grouped(x, k, *w, act)
    assert got.shape == (*shape, 7)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_grouped_odd_sizes_and_one_learner():
    for n, din, h, dout in [(1, 3, 1, 2), (3, 17, 13, 1), (6, 33, 7, 65)]:
        w = weights(n, din, h, dout)
        x = torch.randn(37, din)
        k = torch.randint(0, n + 1, (37,))
        torch.testing.assert_close(dynamic_learners_grouped(x, k, *w, "gelu"),
                                   dynamic_learners_reference(x, k, *w, "gelu"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fn", [dynamic_learners_grouped, dynamic_learners_reference])
def test_bad_inputs_are_clear_errors(fn):
    w1, b1, w2, b2 = weights()
    x = torch.randn(4, 12)
    good = torch.ones(4, dtype=torch.long)
    cases = [
        ((x, good * 5, w1, b1, w2, b2, "gelu"), r"K must lie in \[0, 4\]"),
        ((x, good * -1, w1, b1, w2, b2, "gelu"), r"K must lie in \[0, 4\]"),
        ((x, good.int(), w1, b1, w2, b2, "gelu"), "K must be int64"),
        ((x, good[:3], w1, b1, w2, b2, "gelu"), "K must have X's shape"),
        ((torch.randn(4, 11), good, w1, b1, w2, b2, "gelu"), r"X must be \[\.\.\., 12\]"),
        ((x, good, w1, b1, w2[:, :3], b2, "gelu"), "does not match W1"),
        ((x, good, w1, b1[:, :2], w2, b2, "gelu"), "B1 must be"),
        ((x, good, w1, b1, w2, b2[:3], "gelu"), "B2 must be"),
        ((x, good, w1.double(), b1, w2, b2, "gelu"), "W1 is torch.float64"),
        ((x, good, w1, b1, w2, b2, "tanh"), "activation 'tanh'"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            fn(*args)
