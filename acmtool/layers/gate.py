"""AcmGate: the small MLP that picks, for each token, how many learners run."""
from __future__ import annotations

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

    @property
    def num_choices(self) -> int:
        return self.fc2.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))

    def flops_per_token(self) -> int:
        return 2 * (self.fc1.in_features * self.fc1.out_features + self.fc2.in_features * self.fc2.out_features)
