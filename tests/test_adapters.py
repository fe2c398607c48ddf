"""Adapters and acmize_: every built-in family, the generic finder and user adapters convert into
ACMs that compute the original model exactly with all learners (DESIGN.md, "The ACM" and
"Conversion pipeline" steps 1-2).

Every model is tiny (hidden 32-64, 1-2 layers, or timm's test_vit at 32 px) and built from a
random config: no hub, no weights.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import acmtool
from acmtool.layers import AcmMlp, AcmProjection, AcmSplitLinear, acm_modules

N = 4


# --- tiny models ---------------------------------------------------------------------------------
# Each builder returns (model in eval mode, one input, calibration batches). Inputs are a tensor,
# a tuple of positional arguments or a dict of keyword arguments, as calibration accepts them.

def _timm_vit():
    import timm
    model = timm.create_model("test_vit", img_size=32, num_classes=10)  # 64 wide, 6 blocks, mlp 192
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    calib = [torch.randn(2, 3, 32, 32, generator=g) for _ in range(2)]
    return model.eval(), x, calib


def _timm_vit_explicit():
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=10,
                              mlp_ratio=70 / 64)  # hidden 70: not a multiple of N
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 32, 32, generator=g)
    return model.eval(), x, [(torch.randn(2, 3, 32, 32, generator=g),)]  # calibration as tuples


def _bert():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=70, max_position_embeddings=32, type_vocab_size=2)
    model = BertModel(cfg, add_pooling_layer=False)
    g = torch.Generator().manual_seed(1)

    def batch():
        ids = torch.randint(0, 100, (2, 9), generator=g)
        mask = torch.ones(2, 9, dtype=torch.long)
        mask[1, 6:] = 0
        return {"input_ids": ids, "attention_mask": mask}
    return model.eval(), batch(), [batch() for _ in range(3)]  # calibration as dicts


def _roberta():
    from transformers import RobertaConfig, RobertaModel
    cfg = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1)
    model = RobertaModel(cfg, add_pooling_layer=False)
    g = torch.Generator().manual_seed(1)
    return model.eval(), (torch.randint(3, 100, (2, 9), generator=g),), None


def _hf_vision(family):
    import transformers
    g = torch.Generator().manual_seed(1)
    common = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=2)
    if family == "vit":
        model = transformers.ViTModel(transformers.ViTConfig(**common, intermediate_size=64), add_pooling_layer=False)
    elif family == "deit":
        model = transformers.DeiTModel(transformers.DeiTConfig(**common, intermediate_size=64), add_pooling_layer=False)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**common, mlp_ratio=2))
    x = {"pixel_values": torch.randn(2, 3, 32, 32, generator=g)}
    return model.eval(), x, None


def _wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2Model
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2, vocab_size=16)
    model = Wav2Vec2Model(cfg)
    g = torch.Generator().manual_seed(1)
    return model.eval(), {"input_values": torch.randn(2, 800, generator=g)}, None


def _whisper():
    from transformers import WhisperConfig, WhisperModel
    cfg = WhisperConfig(vocab_size=64, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_ffn_dim=48, max_source_positions=16, max_target_positions=16,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    model = WhisperModel(cfg)
    g = torch.Generator().manual_seed(1)

    def batch():
        return {"input_features": torch.randn(2, 16, 32, generator=g),
                "decoder_input_ids": torch.randint(3, 64, (2, 5), generator=g)}
    return model.eval(), batch(), [batch()]


def _sequential():
    """Two MLPs for the generic finder (one with a Dropout, one 70 wide) among things it must skip."""
    model = nn.Sequential(
        nn.Linear(16, 32), nn.LayerNorm(32),
        nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Dropout(0.1), nn.Linear(64, 32)),
        nn.ReLU(),
        nn.Sequential(nn.Linear(32, 70), nn.SiLU(), nn.Linear(70, 32)),
        nn.Sequential(nn.Linear(32, 32), nn.Identity(), nn.Linear(32, 32)),  # identity "activation": not an MLP
        nn.Linear(32, 10),
    )
    g = torch.Generator().manual_seed(1)
    return model.eval(), torch.randn(3, 5, 16, generator=g), [torch.randn(4, 16, generator=g) for _ in range(2)]


class UserBlock(nn.Module):
    """A pre-norm block with its own attention (fused kv) and an MLP spread over the block."""

    def __init__(self, dim=32, hidden=48, heads=2):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.o = nn.Linear(dim, dim)
        self.up = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.down = nn.Linear(hidden, dim)

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        q = self.q(h).view(b, t, self.heads, -1).transpose(1, 2)
        k, v = self.kv(h).view(b, t, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        x = x + self.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))
        return x + self.down(self.act(self.up(self.norm2(x))))


class UserModel(nn.Module):
    def __init__(self, depth=2):
        super().__init__()
        self.blocks = nn.ModuleList(UserBlock() for _ in range(depth))
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.head(x)


acmtool.register_adapter(UserBlock, acmtool.MlpLayout(fc1="up", act="act", fc2="down", replace="up",
                                                      identity=("act", "down")),
                         attention=acmtool.AttentionLayout(("q", "kv", "o"), fused={"kv": 2}), name="user-block")


def _user():
    model = UserModel()
    g = torch.Generator().manual_seed(1)
    return model.eval(), torch.randn(2, 7, 32, generator=g), None


# name: (builder, adapter name of the MLP sites, MLP ACMs, AcmProjections with mlp+attn, model width)
FAMILIES = {
    "timm-vit": (_timm_vit, "timm-mlp", 6, 6 * 4, 64),
    "timm-vit-70": (_timm_vit_explicit, "timm-mlp", 2, 2 * 4, 64),
    "bert": (_bert, "hf-bert", 2, 2 * 4, 32),
    "roberta": (_roberta, "hf-bert", 2, 2 * 4, 32),
    "vit": (lambda: _hf_vision("vit"), "hf-vit", 2, 2 * 4, 32),
    "deit": (lambda: _hf_vision("deit"), "hf-deit", 2, 2 * 4, 32),
    "dinov2": (lambda: _hf_vision("dinov2"), "hf-dinov2", 2, 2 * 4, 32),
    "wav2vec2": (_wav2vec2, "hf-wav2vec2", 2, 2 * 4, 32),
    "whisper": (_whisper, "hf-whisper", 3, 2 * 4 + 1 * 8, 32),  # decoder: self and cross attention
    "sequential": (_sequential, "generic-sequential", 2, 0, 32),
    "user-block": (_user, "user-block", 2, 2 * 4, 32),  # q, kv as 2 parts, o
}


def _build(name):
    torch.manual_seed(0)
    return FAMILIES[name][0]()


def _run(model, inp):
    if isinstance(inp, dict):
        return model(**inp)
    if isinstance(inp, tuple):
        return model(*inp)
    return model(inp)


def _outputs(out):
    """The main output tensors: last_hidden_state (and the encoder's), logits, or the tensor itself."""
    if isinstance(out, torch.Tensor):
        return [out]
    tensors = [getattr(out, "last_hidden_state", None), getattr(out, "encoder_last_hidden_state", None)]
    tensors = [t for t in tensors if t is not None]
    assert tensors, f"no main output in {type(out).__name__}"
    return tensors


@torch.no_grad()
def _reference(model, inp):
    return [t.clone() for t in _outputs(_run(model, inp))]


def _assert_equal_outputs(model, inp, ref, atol):
    with torch.no_grad():
        got = _outputs(_run(model, inp))
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        err = (g - r).abs().max().item()
        assert err <= atol, f"max abs difference {err:.3g} > {atol}"


def _mlps(model):
    return [m for _, m in acm_modules(model) if isinstance(m, AcmMlp)]


def _projs(model):
    return [m for _, m in acm_modules(model) if isinstance(m, AcmProjection)]


# --- 1, 2: every family converts and computes the original with all learners ------------------------

@pytest.mark.parametrize("family", list(FAMILIES))
def test_mlp_conversion_is_exact_with_all_learners(family):
    model, inp, calib = _build(family)
    _, adapter, n_mlp, _, _ = FAMILIES[family]
    ref = _reference(model, inp)

    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N, targets="mlp"), calibration=calib,
                    example_inputs=inp)

    acms = acm_modules(model)
    assert len(acms) == n_mlp and all(isinstance(m, AcmMlp) for _, m in acms)
    assert all(m.num_learners == N and m.min_k == 0 for _, m in acms)
    sites = model.acmtool_info["sites"]
    assert [s["path"] for s in sites] == [n for n, _ in acms]
    assert {s["adapter"] for s in sites} == {adapter} and {s["kind"] for s in sites} == {"mlp"}
    assert all(not m.training for _, m in acms), "ACMs must keep the replaced module's eval mode"
    profile = model.acmtool_info["flops_profile"]
    assert set(profile["site_tokens"]) == {s["path"] for s in sites}
    assert all(t > 0 for t in profile["site_tokens"].values()) and 0 < profile["rest"] < profile["original"]

    with acmtool.fixed_k(model, N):
        _assert_equal_outputs(model, inp, ref, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "whisper", "sequential"])
def test_conversion_keeps_eval_mode_everywhere(family):
    model, _, _ = _build(family)
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    training = [n for n, m in model.named_modules() if m.training]
    assert not training, f"modules left in training mode: {training}"


def test_whisper_converts_encoder_and_decoder():
    model, _, _ = _build("whisper")
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    names = [n for n, _ in acm_modules(model)]
    assert sum(n.startswith("encoder.") for n in names) == 2
    assert sum(n.startswith("decoder.") for n in names) == 1
    # the ACM takes fc1's place; the activation and fc2 become identities
    layer = model.decoder.layers[0]
    assert isinstance(layer.fc1, AcmMlp) and (layer.fc1.in_features, layer.fc1.out_features) == (32, 32)
    assert isinstance(layer.fc2, nn.Identity) and isinstance(layer.activation_fn, nn.Identity)
    assert layer.fc1.learner_width == 48 // N


def test_bert_mlp_spans_intermediate_and_output():
    model, _, _ = _build("bert")
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    layer = model.encoder.layer[0]
    assert isinstance(layer.intermediate, AcmMlp) and isinstance(layer.output.dense, nn.Identity)
    assert isinstance(layer.output.LayerNorm, nn.LayerNorm)  # the residual and the norm stay outside


@pytest.mark.parametrize("family", ["bert", "timm-vit-70", "sequential"])
def test_hidden_size_not_divisible_by_n_is_zero_padded(family):
    """70 hidden neurons, N = 4: learners of width 18, the last one with 2 zero neurons."""
    model, inp, calib = _build(family)
    ref = _reference(model, inp)
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N), calibration=calib)
    assert math.ceil(70 / N) in {m.learner_width for m in _mlps(model)}
    for m in _mlps(model):
        if m.learner_width == math.ceil(70 / N):
            pad = N * m.learner_width - 70
            assert torch.count_nonzero(m.w1[-1, :, m.learner_width - pad:]) == 0
            assert torch.count_nonzero(m.w2[-1, m.learner_width - pad:]) == 0
            assert torch.count_nonzero(m.b1[-1, m.learner_width - pad:]) == 0
    with acmtool.fixed_k(model, N):
        _assert_equal_outputs(model, inp, ref, atol=1e-5)


def test_calibration_orders_neurons_by_measured_importance():
    """Learner 1 holds the neurons with the largest E|act(fc1 x)| * ||W2[:, j]|| on the calibration data."""
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    model = nn.Sequential(mlp).eval()
    fc1, fc2 = mlp[0], mlp[2]
    with torch.no_grad():
        fc1.bias[:4] = 5.0  # these four neurons fire strongly on any input
        fc1.bias[4:] = -5.0  # and these are nearly dead
    calib = [torch.randn(10, 8) for _ in range(3)]
    acts = torch.cat([F.relu(fc1(x)) for x in calib]).detach()
    importance = acts.abs().mean(0) * fc2.weight.detach().norm(dim=0)
    order = torch.argsort(importance, descending=True, stable=True)

    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N), calibration=iter(calib))
    (acm,) = _mlps(model)
    w1 = acm.w1.detach().permute(1, 0, 2).reshape(8, 16)  # [Din, H] in learner order
    torch.testing.assert_close(w1, fc1.weight.detach()[order].t())
    assert set(order[:4].tolist()) == {0, 1, 2, 3}


# --- 3: attention projections ---------------------------------------------------------------------

@pytest.mark.parametrize("family", ["timm-vit", "bert", "vit", "deit", "dinov2", "wav2vec2", "whisper", "user-block"])
def test_mlp_and_attention_conversion(family):
    model, inp, _ = _build(family)
    _, _, n_mlp, n_proj, width = FAMILIES[family]
    ref = _reference(model, inp)
    rank = width // N  # N * rank = width: every projection keeps full rank

    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N, targets="mlp+attn", proj_rank=rank))

    assert len(_mlps(model)) == n_mlp
    projs = _projs(model)
    assert len(projs) == n_proj
    assert all(p.min_k == 1 and p.activation == "identity" and p.learner_width == rank for p in projs)
    kinds = [s["kind"] for s in model.acmtool_info["sites"]]
    assert kinds.count("mlp") == n_mlp
    if family == "timm-vit":
        splits = [m for m in model.modules() if isinstance(m, AcmSplitLinear)]
        assert len(splits) == 6 and all(len(s.parts) == 3 for s in splits)
        assert all(isinstance(b.attn.proj, AcmProjection) for b in model.blocks)
        assert kinds.count("proj") == 6 * 2  # qkv and proj per block: one site each
    if family == "user-block":
        assert all(isinstance(b.kv, AcmSplitLinear) and len(b.kv.parts) == 2 for b in model.blocks)
        assert all(b.kv.parts[0].b2 is None for b in model.blocks)  # kv has no bias
    if family in ("bert", "vit", "deit", "dinov2", "wav2vec2", "whisper"):
        assert kinds.count("proj") == n_proj

    with torch.no_grad():
        for t in _outputs(_run(model, inp)):  # gated
            assert torch.isfinite(t).all()
        for k in range(N + 1):
            with acmtool.fixed_k(model, k):
                for t in _outputs(_run(model, inp)):
                    assert torch.isfinite(t).all()
    with acmtool.fixed_k(model, N):
        _assert_equal_outputs(model, inp, ref, atol=1e-4)


def test_default_projection_rank_is_low_rank_but_finite():
    model, inp, _ = _build("timm-vit")
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N, targets="mlp+attn"))
    for p in _projs(model):
        # default: N learners whose full cost equals the dense projection's
        assert p.learner_width == max(1, (p.in_features * p.out_features) // ((p.in_features + p.out_features) * N))
    with torch.no_grad(), acmtool.fixed_k(model, N):
        assert torch.isfinite(_run(model, inp)).all()


def test_projection_prefixes_are_truncated_svd():
    """Every prefix of a projection ACM is the best low-rank approximation: errors fall with k."""
    model, _, _ = _build("user-block")
    q = model.blocks[0].q
    w = q.weight.detach().clone()
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N, targets="mlp+attn", proj_rank=8))
    acm = model.blocks[0].q
    s = torch.linalg.svdvals(w)
    for k in range(1, N + 1):
        approx = (acm.w1[:k].permute(1, 0, 2).reshape(32, -1) @ acm.w2[:k].reshape(-1, 32)).detach()
        err = torch.linalg.matrix_norm(approx - w.t()).item()
        best = s[8 * k:].pow(2).sum().sqrt().item()
        assert err == pytest.approx(best, abs=1e-4)


# --- 4: gated inference ---------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["timm-vit", "bert", "whisper", "user-block"])
def test_gated_eval_forward_reports_k_in_range(family):
    model, inp, _ = _build(family)
    ref = _reference(model, inp)
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N, targets="mlp+attn"))
    acms = [m for _, m in acm_modules(model)]

    # a fresh gate prefers all learners: the gated model starts as the original (projections aside)
    mlp_only, _, _ = _build(family)
    acmtool.acmize_(mlp_only, acmtool.AcmConfig(num_learners=N))
    _assert_equal_outputs(mlp_only, inp, ref, atol=1e-5)
    assert all(bool((m.last_k == N).all()) for m in _mlps(mlp_only))

    # random gates: every k occurs somewhere, and always within [min_k, N]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in acms:
            m.gate.fc2.weight.copy_(torch.randn(m.gate.fc2.weight.shape, generator=g))
            m.gate.fc2.bias.zero_()
        out = _outputs(_run(model, inp))
    assert all(torch.isfinite(t).all() for t in out)
    seen = set()
    for m in acms:
        assert m.last_k is not None and m.last_k.dtype == torch.int64
        assert int(m.last_k.min()) >= m.min_k and int(m.last_k.max()) <= N
        seen.update(m.last_k.unique().tolist())
    assert seen == set(range(0, N + 1))

    acmtool.set_impl(model, "naive")  # the reference path agrees with the grouped one
    with torch.no_grad():
        naive = _outputs(_run(model, inp))
    for a, b in zip(out, naive):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_fixed_k_clamps_and_restores():
    model, inp, _ = _build("user-block")
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N, targets="mlp+attn"))
    with torch.no_grad(), acmtool.fixed_k(model, 0):
        _run(model, inp)
    for _, m in acm_modules(model):
        assert bool((m.last_k == m.min_k).all())  # k = 0 becomes 1 for projections
        assert m.forced_k is None


# --- 5, 6: errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("model", [
    nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten()),
    nn.Linear(8, 8),
    nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8)),  # the finder skips unknown activations
], ids=["conv", "linear", "tanh-sequential"])
def test_nothing_to_convert(model):
    with pytest.raises(acmtool.AcmInputError, match=r"found no block to convert.*register_adapter"):
        acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    assert not acm_modules(model)


@pytest.mark.parametrize("family", ["bert", "sequential"])
def test_converting_twice(family):
    model, _, _ = _build(family)
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    before = [n for n, _ in acm_modules(model)]
    with pytest.raises(acmtool.AcmInputError, match="already holds ACMs"):
        acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    assert [n for n, _ in acm_modules(model)] == before


class TanhBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 8)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


acmtool.register_adapter(TanhBlock, acmtool.MlpLayout("fc1", "act", "fc2"), name="tanh-block")


def test_unsupported_activation_is_named():
    model = nn.Sequential(nn.Linear(4, 8), TanhBlock())
    with pytest.raises(acmtool.AcmInputError, match=r"1\.act.*Tanh.*not supported"):
        acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    assert not acm_modules(model) and isinstance(model[1].fc1, nn.Linear)  # left untouched


def test_unsupported_hf_activation_is_named():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=16, hidden_act="quick_gelu")
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with pytest.raises(acmtool.AcmInputError, match="QuickGELUActivation"):
        acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))


@pytest.mark.parametrize("act,name", [
    ("gelu", "gelu"), ("gelu_new", "gelu_tanh"), ("gelu_pytorch_tanh", "gelu_tanh"), ("relu", "relu"),
    ("silu", "silu"), ("gelu_fast", "gelu_tanh"),
])
def test_hf_activations_map_exactly(act, name):
    from transformers import ViTConfig, ViTModel
    cfg = ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=64, hidden_act=act)
    model = ViTModel(cfg, add_pooling_layer=False).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = _reference(model, {"pixel_values": x})
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    assert [m.activation for m in _mlps(model)] == [name]
    with acmtool.fixed_k(model, N):
        _assert_equal_outputs(model, {"pixel_values": x}, ref, atol=1e-5)


def test_timm_mlp_with_norm_is_left_dense():
    from timm.layers import Mlp
    model = nn.ModuleDict({"a": Mlp(16, 32, norm_layer=nn.LayerNorm), "b": Mlp(16, 32)})
    with pytest.warns(UserWarning, match="norm between fc1 and fc2"):
        acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    assert [n for n, _ in acm_modules(model)] == ["b"]


def test_block_that_is_the_whole_model():
    """The adapter's block is the model itself: there is nowhere to put the ACM in place."""
    from timm.layers import Mlp
    model = Mlp(16, 32).eval()
    with pytest.raises(acmtool.AcmInputError):
        acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))


def test_float64_model_keeps_full_precision():
    model, inp, _ = _build("sequential")
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))  # weights that float32 cannot hold exactly
    ref = _reference(model, inp.double())
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N))
    assert all(m.w1.dtype == torch.float64 for m in _mlps(model))
    with acmtool.fixed_k(model, N):
        _assert_equal_outputs(model, inp.double(), ref, atol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_calibration_on_cuda_model():
    model, inp, calib = _build("sequential")
    model = model.cuda()
    ref = _reference(model, inp.cuda())
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=N), calibration=[x.cuda() for x in calib])
    with acmtool.fixed_k(model, N):
        _assert_equal_outputs(model, inp.cuda(), ref, atol=1e-4)
