"""AcmGate: the small MLP that picks, for each token, how many learners run."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class AcmGate(nn.Module):
    """Din -> G -> num_choices logits; choice c means k = c + min_k learners.

    Initialised to prefer the last choice (all learners), so that a freshly converted model
    computes the original model until the gate is trained.
    """

    def __init__(self, in_features: int, hidden: int, num_choices: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, num_choices)
        nn.init.normal_(self.fc2.weight, std=1e-3)
        with torch.no_grad():
            self.fc2.bias.zero_()
            self.fc2.bias[-1] = 1.0
        # A budget-conditioned gate (convert --budget-range) reads the budget asked for, as its
        # difference from the trained one: budget_delta (None: the trained budget; a float, or a
        # tensor while the export traces the budget input) times a learned direction of the hidden
        # layer (token by token) and of the logits (per choice). One global logit shift (the knob)
        # moves every block alike; these let each block and token answer the budget its own way.
        self.budget_in: Optional[nn.Parameter] = None
        self.budget_out: Optional[nn.Parameter] = None
        self.budget_delta = None

    def condition_on_budget(self) -> None:
        """Add the budget's two directions, at zero: the gate is unchanged until they train."""
        w = self.fc1.weight
        self.budget_in = nn.Parameter(torch.zeros(self.fc1.out_features, device=w.device, dtype=w.dtype))
        self.budget_out = nn.Parameter(torch.zeros(self.num_choices, device=w.device, dtype=w.dtype))

    @property
    def num_choices(self) -> int:
        return self.fc2.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, d = self.fc1(x), self.budget_delta
        conditioned = self.budget_in is not None and d is not None
        if conditioned:
            h = h + d * self.budget_in
        logits = self.fc2(F.gelu(h))
        return logits + d * self.budget_out if conditioned else logits

    def flops_per_token(self) -> int:
        return 2 * (self.fc1.in_features * self.fc1.out_features + self.fc2.in_features * self.fc2.out_features)
