"""Loss-aware gate labels: the Fisher probe, the captured sensitivities and the joint oracle
allocation (acmtool.train.sensitivity, SiteCapture(sensitivity=True), loss_aware_gate_labels)."""
import copy

import pytest
import timm
import torch

from acmtool.config import AcmConfig
from acmtool.convert.acmize import acmize_
from acmtool.layers import AcmMlp
from acmtool.layers.acm import acm_modules
from acmtool.train.capture import SiteCapture
from acmtool.train.losses import batch_budget, loss_aware_gate_labels
from acmtool.train.objectives import GateObjective
from acmtool.train.sensitivity import fisher_probe


def acm(n=4, din=12, h=5, dout=9):
    m = AcmMlp(din, dout, n, h, "gelu", min_k=0, gate_hidden=8)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    return m


def spent(acms, labels) -> float:
    onehots = [torch.nn.functional.one_hot(lab, a.num_learners + 1 - a.min_k).float() for a, lab in zip(acms, labels)]
    return float(batch_budget(acms, onehots))


def test_probe_of_logits_has_the_softmax_fisher_as_covariance():
    row = torch.tensor([2.0, 0.5, -1.0, 0.0])
    logits = row.repeat(40000, 1).requires_grad_()  # one probe per row: the gradient is each row's v
    grads = torch.autograd.grad(fisher_probe(logits, None, torch.Generator().manual_seed(0)), logits)[0]
    p = torch.softmax(row, -1)
    fisher = torch.diag(p) - torch.outer(p, p)
    assert torch.allclose(grads.T @ grads / len(grads), fisher, atol=0.01)


def test_probe_of_an_embedding_reads_its_direction_only():
    emb = torch.randn(3, 6, requires_grad=True)
    g = torch.autograd.grad(fisher_probe(emb.unsqueeze(1).expand(3, 2, 6), None), emb)[0]
    # the normalised embedding does not change when the embedding grows along itself
    assert torch.allclose((g * emb).sum(-1), torch.zeros(3), atol=1e-5)


@pytest.mark.parametrize("budget", [0.25, 0.5, 0.75])
def test_labels_spend_the_budget_over_every_block(budget):
    acms = [acm(), acm(din=12, h=7, dout=9)]  # the second block's learners cost more
    caps = []
    for a in acms:
        z = torch.randn(300, 12)
        caps.append((z, a.forward_k(z, 4) + 0.05 * torch.randn(300, 9), torch.randn(300, 9)))
    labels = loss_aware_gate_labels(acms, caps, budget)
    assert [lab.shape for lab in labels] == [(300,), (300,)]
    assert budget - 0.03 < spent(acms, labels) <= budget + 1e-6
    assert all(len(lab.unique()) > 1 for lab in labels)


def test_a_block_whose_output_is_never_read_gets_no_learners():
    acms = [acm(), acm()]
    caps = []
    for i, a in enumerate(acms):
        z = torch.randn(200, 12)
        g = torch.randn(200, 9) if i == 0 else torch.zeros(200, 9)
        caps.append((z, a.forward_k(z, 4) + 0.05 * torch.randn(200, 9), g))
    used, unread = loss_aware_gate_labels(acms, caps, 0.4)
    assert int(unread.max()) == 0
    assert float(used.float().mean()) / 4 > 0.7  # the budget goes where the output reads it
    assert spent(acms, [used, unread]) <= 0.4 + 1e-6


def test_labels_do_not_depend_on_the_probes_scale():
    acms = [acm(), acm()]
    caps = []
    for a in acms:
        z = torch.randn(200, 12)
        caps.append((z, a.forward_k(z, 4) + 0.05 * torch.randn(200, 9), torch.randn(200, 9)))
    plain = loss_aware_gate_labels(acms, caps, 0.5)
    scaled = loss_aware_gate_labels(acms, [(z, y, 1e4 * g) for z, y, g in caps], 0.5)
    assert all(torch.equal(a, b) for a, b in zip(plain, scaled))


def test_a_budget_beyond_every_useful_learner_is_not_forced():
    a = acm()
    z = torch.randn(50, 12)
    (labels,) = loss_aware_gate_labels([a], [(z, a.forward_k(z, 4), torch.zeros(50, 9))], 1.0)
    assert int(labels.max()) == 0  # nothing costs anything: no learner is worth its FLOPs


@pytest.fixture
def vit_pair():
    torch.manual_seed(0)
    teacher = timm.create_model("vit_tiny_patch16_224", img_size=16, in_chans=1, patch_size=4, embed_dim=32, depth=2,
                                num_heads=2, num_classes=4).eval()
    student = copy.deepcopy(teacher)
    acmize_(student, AcmConfig(num_learners=4, targets="mlp"), calibration=None, init=False)
    return teacher.requires_grad_(False), student


def test_capture_gives_each_token_its_sensitivity(vit_pair):
    teacher, student = vit_pair
    x = torch.randn(3, 1, 16, 16)
    capture = SiteCapture(teacher, student, "mlp")
    plain_out, plain = capture(x)
    out, caps = capture(x, sensitivity=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, plain_out) and not out.requires_grad
    assert set(caps) == set(plain) == {"blocks.0.mlp", "blocks.1.mlp"}
    for name, (z, y, g) in caps.items():
        assert torch.equal(z, plain[name][0]) and torch.equal(y, plain[name][1]) and g.shape == y.shape
    # after the last block only the class token reaches the head: the patch tokens cost nothing
    last = caps["blocks.1.mlp"][2].reshape(3, 17, -1)
    assert float(last[:, 1:].abs().max()) == 0 and float(last[:, 0].abs().min()) > 0
    # every sample weighs alike
    totals = sum(c[2].reshape(3, 17, -1).pow(2).sum((1, 2)) for c in caps.values())
    assert torch.allclose(totals, totals.mean().expand(3), rtol=1e-4)
    assert all(p.grad is None for p in teacher.parameters())


def test_more_probes_give_a_steadier_sensitivity(vit_pair):
    teacher, student = vit_pair
    capture = SiteCapture(teacher, student, "mlp")
    x = torch.randn(3, 1, 16, 16)

    def spread(probes: int) -> float:  # per token of the first block: std / mean of sum_d g^2 over seeds
        s = torch.stack([capture(x, sensitivity=True, generator=torch.Generator().manual_seed(seed), probes=probes)[1]
                         ["blocks.0.mlp"][2].pow(2).sum(-1) for seed in range(12)])
        return float((s.std(0) / s.mean(0)).mean())
    one, many = spread(1), spread(16)
    assert many < 0.5 * one, (one, many)  # ~1/4 expected: the variance of a mean of 16
    with pytest.raises(ValueError, match="probes"):
        capture(x, sensitivity=True, probes=0)


def test_gate_objective_learns_loss_aware_labels(vit_pair):
    teacher, student = vit_pair
    acms = dict(acm_modules(student))
    for m in acms.values():
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0, 0.3)
    capture = SiteCapture(teacher, student, "mlp")
    objective = GateObjective(acms, 0.83, "loss", 0.5)
    _, caps = capture(torch.randn(4, 1, 16, 16), sensitivity=True)
    loss, acc = objective(caps)
    loss.backward()
    assert torch.isfinite(loss) and 0 <= acc <= 1
    assert all(m.gate.fc2.weight.grad is not None for m in acms.values())


def test_capture_of_a_text_model_leaves_padding_out():
    from transformers import BertConfig, BertModel
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=32)
    teacher = BertModel(cfg, add_pooling_layer=False).eval().requires_grad_(False)
    student = copy.deepcopy(teacher)
    acmize_(student, AcmConfig(num_learners=4, targets="mlp"), calibration=None, init=False)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    inputs = {"input_ids": torch.randint(0, 100, (2, 9)), "attention_mask": mask}
    _, caps = SiteCapture(teacher, student, "mlp")(inputs, sensitivity=True)
    assert len(caps) == 2
    for z, y, g in caps.values():
        assert z.shape[0] == y.shape[0] == g.shape[0] == 15  # 9 + 6 real tokens
        assert float(g.abs().sum()) > 0
