"""The report says how often a gate skips a block (k = 0): the share the issue asks to see."""
import torch

from acmtool.layers import AcmMlp, AcmProjection
from acmtool.layers.acm import acm_modules
from acmtool.train.evaluate import budget_report


def test_k0_share_counts_mlp_tokens_only():
    model = torch.nn.Sequential(AcmMlp(8, 8, 4, 4, "gelu", min_k=0, gate_hidden=4),
                                AcmMlp(8, 8, 4, 4, "gelu", min_k=0, gate_hidden=4),
                                AcmProjection(8, 8, 4, 2, "identity", min_k=1, gate_hidden=4))
    names = [n for n, _ in acm_modules(model)]
    hist = {names[0]: torch.tensor([3, 1, 0, 0, 0]), names[1]: torch.tensor([1, 0, 0, 0, 3]),
            names[2]: torch.tensor([0, 4, 0, 0, 0])}
    report = budget_report(model, hist, None)
    assert report["per_layer"][names[0]]["k0_share"] == 0.75
    assert report["per_layer"][names[1]]["k0_share"] == 0.25
    assert report["k0_share"] == 0.5  # 4 of the 8 MLP tokens; the projection's k >= 1 is left out
