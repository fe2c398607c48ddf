"""The DynamicLearners computation in PyTorch."""
from acmtool.ops.activations import ACTIVATIONS, apply_activation
from acmtool.ops.dynamic_learners import (
    dynamic_learners,
    dynamic_learners_grouped,
    dynamic_learners_reference,
    learner_outputs_of,
)

__all__ = ["ACTIVATIONS", "apply_activation", "dynamic_learners", "dynamic_learners_grouped",
           "dynamic_learners_reference", "learner_outputs_of"]
