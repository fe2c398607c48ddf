"""ACM building blocks: the learners module, the gate, model-wide switches."""
from acmtool.layers.acm import AcmMlp, AcmModule, AcmProjection, AcmSplitLinear, acm_modules
from acmtool.layers.control import apply_static_k, at_budget, fixed_k, set_budget, set_impl
from acmtool.layers.gate import AcmGate

__all__ = ["AcmGate", "AcmMlp", "AcmModule", "AcmProjection", "AcmSplitLinear", "acm_modules", "apply_static_k",
           "at_budget", "fixed_k", "set_budget", "set_impl"]
