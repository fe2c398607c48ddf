"""Errors in the units of a linear head on the original's standardised embedding
(acmtool.train.feature_scale, the scaled embedding loss and Fisher probe)."""
import torch
import torch.nn as nn

from acmtool.train.feature_scale import MIN_RELATIVE_SPREAD, embedding_scale
from acmtool.train.losses import embedding_distillation_loss
from acmtool.train.sensitivity import fisher_probe


class Encoder(nn.Module):
    """[B, T, D] hidden states whose dimensions spread unevenly: dimension 0 barely moves."""

    def __init__(self, spread):
        super().__init__()
        self.spread = torch.tensor(spread)

    def forward(self, x):
        return x * self.spread


def test_scale_is_each_dimension_s_spread_of_the_pooled_embedding():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(64, 5, 3, generator=g) for _ in range(4)]
    scale = embedding_scale(Encoder([1e-1, 1.0, 10.0]), batches, "cpu")
    pooled = torch.cat([b.mean(1) for b in batches]) * torch.tensor([1e-1, 1.0, 10.0])
    assert torch.allclose(scale, pooled.std(0))


def test_scale_has_a_floor_for_dimensions_that_do_not_move():
    batches = [torch.randn(32, 4, 3, generator=torch.Generator().manual_seed(1))]
    scale = embedding_scale(Encoder([0.0, 1.0, 2.0]), batches, "cpu")
    assert scale[0] > 0 and torch.isclose(scale[0], MIN_RELATIVE_SPREAD * scale.median(), rtol=1e-4)


def test_classifiers_have_no_scale():
    batches = [torch.randn(8, 10)]  # [B, C] outputs are logits
    assert embedding_scale(nn.Identity(), batches, "cpu") is None


def test_scaled_loss_sees_an_error_that_cosine_misses():
    teacher = torch.tensor([[0.01, 10.0], [-0.01, 10.0]])
    student = teacher.clone()
    student[:, 0] += 0.02  # two of dimension 0's standard deviations; the direction barely moves
    scale = teacher.std(0).clamp(min=1e-3)
    plain = embedding_distillation_loss(None, None, student, teacher)
    scaled = embedding_distillation_loss(None, None, student, teacher, scale=scale)
    assert plain < 1e-5
    assert scaled > 1.0
    assert embedding_distillation_loss(None, None, teacher, teacher, scale=scale) < 1e-6


def test_scaled_probe_weighs_dimensions_by_one_over_their_spread():
    scale = torch.tensor([0.5, 2.0, 4.0])
    emb = torch.randn(20000, 3, requires_grad=True)  # [B, 1, D] below: one token, its pooled embedding
    g = torch.autograd.grad(fisher_probe(emb.unsqueeze(1), None, torch.Generator().manual_seed(0), scale=scale), emb)[0]
    # E[g^2] = 1 / scale^2: the curvature of the standardised squared error
    assert torch.allclose(g.pow(2).mean(0), scale.pow(-2), rtol=0.05)
