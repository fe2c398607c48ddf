"""DynamicLearners in PyTorch: the reference (the specification) and the grouped fast path.

    Y[t] = B2 + sum_{i < K[t]} act(X[t] W1[i] + B1[i]) W2[i]

Shapes: X [..., Din], K [...] int64 in [0, N], W1 [N, Din, h], B1 [N, h] or None,
W2 [N, h, Dout], B2 [Dout] or None. Every fast path (grouped, C++, CUDA, standard ONNX ops)
is tested against `dynamic_learners_reference`.
"""
from __future__ import annotations

import torch

from acmtool.ops.activations import ACTIVATIONS, apply_activation, apply_activation_


def check_inputs(x, k, w1, b1, w2, b2, activation: str) -> None:
    """Raise ValueError naming what is wrong; shared by every path."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if w1.dim() != 3 or w2.dim() != 3:
        raise ValueError(f"W1 and W2 must be [N, Din, h] and [N, h, Dout]; got {tuple(w1.shape)} and {tuple(w2.shape)}")
    n, din, h = w1.shape
    if w2.shape[0] != n or w2.shape[1] != h:
        raise ValueError(f"W2 {tuple(w2.shape)} does not match W1 {tuple(w1.shape)}: expected [{n}, {h}, Dout]")
    dout = w2.shape[2]
    if x.dim() < 1 or x.shape[-1] != din:
        raise ValueError(f"X must be [..., {din}]; got {tuple(x.shape)}")
    if tuple(k.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"K must have X's shape without its last axis, {tuple(x.shape[:-1])}; got {tuple(k.shape)}")
    if k.dtype != torch.int64:
        raise ValueError(f"K must be int64; got {k.dtype}")
    if b1 is not None and tuple(b1.shape) != (n, h):
        raise ValueError(f"B1 must be [{n}, {h}]; got {tuple(b1.shape)}")
    if b2 is not None and tuple(b2.shape) != (dout,):
        raise ValueError(f"B2 must be [{dout}]; got {tuple(b2.shape)}")
    for name, t in (("W1", w1), ("B1", b1), ("W2", w2), ("B2", b2)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"{name} is {t.dtype} but X is {x.dtype}; all float inputs must share one dtype")
    if k.numel() and (int(k.min()) < 0 or int(k.max()) > n):
        raise ValueError(f"K must lie in [0, {n}] (N = {n} learners); got values in [{int(k.min())}, {int(k.max())}]")


def learner_outputs_of(x, w1, b1, w2, activation: str) -> torch.Tensor:
    """s_i(x) for every learner i: [N, ..., Dout]."""
    h = torch.einsum("...d,ndh->n...h", x, w1)
    if b1 is not None:
        h = h + b1.view(b1.shape[0], *([1] * (x.dim() - 1)), b1.shape[1])
    h = apply_activation(h, activation)
    return torch.einsum("n...h,nho->n...o", h, w2)


def dynamic_learners_reference(x, k, w1, b1, w2, b2, activation: str) -> torch.Tensor:
    """The specification: every learner on every token, masked by i < K."""
    check_inputs(x, k, w1, b1, w2, b2, activation)
    n = w1.shape[0]
    s = learner_outputs_of(x, w1, b1, w2, activation)  # [N, ..., Dout]
    idx = torch.arange(n, device=x.device).view(n, *([1] * k.dim()))
    mask = (idx < k.unsqueeze(0)).to(x.dtype).unsqueeze(-1)
    y = (s * mask).sum(0)
    if b2 is not None:
        y = y + b2
    return y


def dynamic_learners_grouped(x, k, w1, b1, w2, b2, activation: str, validate: bool = True) -> torch.Tensor:
    """Tokens bucketed by K (sorted descending), so learner i runs on the contiguous prefix of
    tokens with K > i as two dense GEMMs; one scatter back at the end."""
    if validate:
        check_inputs(x, k, w1, b1, w2, b2, activation)
    n, din, _ = w1.shape
    dout = w2.shape[2]
    lead = x.shape[:-1]
    xf = x.reshape(-1, din)
    kf = k.reshape(-1)
    t = xf.shape[0]
    ys = (b2.expand(t, dout).clone() if b2 is not None else xf.new_zeros(t, dout))
    if t == 0:
        return ys.reshape(*lead, dout)
    counts = torch.bincount(kf, minlength=n + 1)
    # active[i] = number of tokens with K > i: learner i runs on the first active[i] sorted tokens.
    active = counts.flip(0).cumsum(0).flip(0)[1:].tolist()  # the one host sync
    if all(a in (0, t) for a in active):  # one K for every token: no sort, no scatter
        return _uniform_k(xf, sum(a == t for a in active), w1, b1, w2, ys, activation).reshape(*lead, dout)
    order = torch.argsort(kf, descending=True, stable=True)
    xs = xf.index_select(0, order)
    for i in range(n):
        m = active[i]
        if m == 0:
            break
        if b1 is not None:
            hid = torch.addmm(b1[i], xs[:m], w1[i])
        else:
            hid = xs[:m] @ w1[i]
        hid = apply_activation_(hid, activation)
        ys[:m].addmm_(hid, w2[i])
    out = torch.empty_like(ys)
    out.index_copy_(0, order, ys)
    return out.reshape(*lead, dout)


def _uniform_k(xf, k: int, w1, b1, w2, ys, activation: str) -> torch.Tensor:
    """Every token runs the first k learners: one GEMM pair on the learners side by side."""
    if k == 0:
        return ys
    n, din, h = w1.shape
    w1k = w1[:k].permute(1, 0, 2).reshape(din, k * h)
    hid = torch.addmm(b1[:k].reshape(-1), xf, w1k) if b1 is not None else xf @ w1k
    hid = apply_activation_(hid, activation)
    return ys.addmm_(hid, w2[:k].reshape(k * h, -1))


def dynamic_learners(x, k, w1, b1, w2, b2, activation: str, impl: str = "grouped") -> torch.Tensor:
    """impl: 'grouped' (the fast path, as one torch op that export keeps whole), 'naive' (the
    reference) or 'masked' (stock ops only, for the standard ONNX export)."""
    if impl == "grouped":
        from acmtool.ops.torch_op import dynamic_learners_op
        return dynamic_learners_op(x, k, w1, b1, w2, b2, activation)
    if impl == "naive":
        return dynamic_learners_reference(x, k, w1, b1, w2, b2, activation)
    if impl == "masked":
        from acmtool.ops.masked import dynamic_learners_masked
        return dynamic_learners_masked(x, k, w1, b1, w2, b2, activation)
    raise ValueError(f"impl must be 'grouped', 'naive' or 'masked'; got {impl!r}")
