"""A logistic-regression probe (multinomial, L2), fitted with L-BFGS: the frozen-probe metric."""
from __future__ import annotations

import torch
import torch.nn.functional as F


class LinearProbe:
    def __init__(self, l2: float = 1e-3, iterations: int = 200):
        self.l2, self.iterations = l2, iterations

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "LinearProbe":
        x = x.double()
        self.mean, self.std = x.mean(0), x.std(0).clamp(min=1e-6)
        xs = (x - self.mean) / self.std
        classes = int(y.max()) + 1
        self.w = torch.zeros(xs.shape[1], classes, dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.w, self.b], max_iter=self.iterations, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(xs @ self.w + self.b, y) + self.l2 * self.w.pow(2).sum()
            loss.backward()
            return loss
        with torch.enable_grad():
            opt.step(closure)
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (((x.double() - self.mean) / self.std) @ self.w + self.b).argmax(-1)
