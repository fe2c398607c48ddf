"""When ONNX Runtime and the float32 reference differ by more than the tolerance, which one is off?

An input that is badly conditioned amplifies float32 rounding, so two correct float32 paths can
differ beyond a tolerance set for well-conditioned outputs. Whisper tiny.en's encoder does this on
frames 62-63, channel 354: there its dense export in stock ONNX ops (no ACM) differs from PyTorch by
up to 2.9e-3, and each is off the float64 answer by up to 1.7e-3 and 1.2e-3, one batch the one more,
the next the other. The reference run in float64, replaying the same K, is the arbiter: ONNX
Runtime passes where its error against float64 is within FLOAT32_SLACK times the largest error the
float32 reference makes on the batches checked (at least the output's rounding): float32's error on
this model and data. A wrong kernel is off by the size of the output, orders of magnitude beyond.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from torch import nn

# ORT sums in another order than PyTorch; on a badly conditioned input either can land several
# times further from the exact value than the other, so the float32 reference's error is a scale.
FLOAT32_SLACK = 4.0
FLOAT32_EPS = float(np.finfo(np.float32).eps)


class Float64Reference:
    """The verified model in float64, copied on first use (most verifies never need it)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self._wrapped = None

    def __call__(self, inputs, budget, ks: dict) -> np.ndarray:
        """The model's output on `inputs` at `budget`, each ACM in `ks` replaying those K."""
        from acmtool.export.onnx_export import MainOutput, use_impl
        from acmtool.export.verify import replay
        from acmtool.layers.control import at_budget
        if self._wrapped is None:
            self._wrapped = MainOutput(copy.deepcopy(self.model).double()).eval()
        model = self._wrapped.model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a low budget's accuracy warning
            with torch.no_grad(), use_impl(model, "naive"), at_budget(model, budget), replay(model, ks):
                if isinstance(inputs, dict):
                    return self._wrapped(**{n: _double(v) for n, v in inputs.items()}).numpy()
                return self._wrapped(_double(inputs)).numpy()


def _double(t):
    return t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t


def errors_against(y_ort: np.ndarray, ref32: np.ndarray, ref64: np.ndarray) -> dict:
    """{"ort": ORT's max error against float64, "reference": the float32 reference's, "scale": the output's size}."""
    def err(y):
        return float(np.abs(y.astype(np.float64) - ref64).max()) if y.size else 0.0
    return {"ort": err(y_ort), "reference": err(ref32), "scale": float(np.abs(ref64).max()) if ref64.size else 0.0}


def rounding_verdict(over: list, checked: list, allowed: float) -> dict:
    """Do float32's errors explain the batches `over` the tolerance? `checked`: every batch run in
    float64 (`over` among them), whose largest reference error measures float32's on this data."""
    ort = max(e["ort"] for e in over)
    ref = max(e["reference"] for e in checked)
    scale = max(e["scale"] for e in checked)
    bound = max(allowed, FLOAT32_SLACK * max(ref, FLOAT32_EPS * scale))
    return {"batches": len(over), "ort": ort, "reference": ref, "bound": bound, "passed": ort <= bound}
