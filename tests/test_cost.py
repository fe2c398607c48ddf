"""The cost model: per-ACM FLOPs, the whole-model profile, the budget."""
import pytest
import torch

import acmtool
from acmtool.cost import acm_rows, budget, count_flops, model_flops, uniform_mean_k
from acmtool.io.sources import example_inputs, load_model
from acmtool.layers import acm_modules


@pytest.fixture
def vit():
    loaded = load_model("timm:test_vit")
    original = count_flops(loaded.model, torch.randn(1, 3, 160, 160))
    acmtool.acmize_(loaded.model, example_inputs=example_inputs(loaded.model, loaded.spec))
    return loaded.model, original


def test_profile_counts_the_whole_model(vit):
    model, original = vit
    profile = model.acmtool_info["flops_profile"]
    assert profile["original"] == original
    # 160 px / 16 = 10 x 10 patches + the class token reach every MLP
    assert set(profile["site_tokens"].values()) == {101}
    dim, hidden, depth, tokens = 64, 192, 6, 101
    mlp = depth * tokens * 2 * hidden * (dim + dim)
    assert profile["rest"] == original - mlp
    # the rest holds more than the MLPs' neighbours' matmuls: attention (SDPA on CPU) and norms count
    qkv_proj = depth * tokens * 2 * dim * 4 * dim
    assert profile["rest"] > qkv_proj + depth * 2 * 2 * tokens * tokens * dim


def test_model_flops_at_full_and_zero(vit):
    model, original = vit
    profile = model.acmtool_info["flops_profile"]
    gates = sum(m.gate_flops() for _, m in acm_modules(model)) * 101
    full = model_flops(model, profile, uniform_mean_k(model, 1.0))
    assert full["acm"] == original + gates  # 192 hidden splits evenly into 4 learners: no padding
    none = model_flops(model, profile, {n: 0.0 for n, _ in acm_modules(model)})
    assert none["acm"] == profile["rest"] + gates
    half = model_flops(model, profile, uniform_mean_k(model, 0.5))
    assert none["ratio"] < half["ratio"] < full["ratio"]


def test_budget_weights_acms_by_their_learner_flops():
    big = acmtool.AcmMlp(8, 8, 4, 30, "gelu", 0, gate_hidden=4)
    small = acmtool.AcmMlp(8, 8, 4, 10, "gelu", 0, gate_hidden=4)
    model = torch.nn.Sequential(big, small)
    beta = budget(model, {"0": 4.0, "1": 0.0})
    assert beta == pytest.approx(30 / 40)
    assert budget(model, uniform_mean_k(model, 0.25)) == pytest.approx(0.25)
    # tokens weight too: the small ACM sees 3x the tokens
    assert budget(model, {"0": 4.0, "1": 0.0}, tokens={"0": 1, "1": 3}) == pytest.approx(30 / 60)


def test_rows_list_every_k():
    model = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.ReLU(), torch.nn.Linear(12, 8))
    acmtool.acmize_(model, acmtool.AcmConfig(num_learners=3))
    (row,) = acm_rows(model)
    assert row["flops_at_k"] == [0, 2 * 4 * 16, 4 * 4 * 16, 6 * 4 * 16]
    assert row["kind"] == "mlp" and row["activation"] == "relu"
