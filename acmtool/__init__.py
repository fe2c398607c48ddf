"""acmtool: granular conditional computation with Adaptive Computation Modules (ACMs).

`import acmtool` stays light: torch only; timm, transformers and onnxruntime load when used.
"""
from acmtool._version import __version__
from acmtool.adapters import AttentionLayout, MlpLayout, register_adapter, register_finder
from acmtool.config import AcmConfig
from acmtool.convert import acmize_
from acmtool.errors import AcmCheckFailed, AcmInputError
from acmtool.layers import AcmGate, AcmMlp, AcmModule, AcmProjection, fixed_k, set_impl

__all__ = ["AcmCheckFailed", "AcmConfig", "AcmGate", "AcmInputError", "AcmMlp", "AcmModule", "AcmProjection",
           "AttentionLayout", "MlpLayout", "__version__", "acmize_", "fixed_k", "load", "register_adapter",
           "register_finder", "save", "set_impl"]


def save(model, path, source=None):
    """Write the ACM checkpoint (one .safetensors file, atomically). See acmtool.io.checkpoint."""
    from acmtool.io.checkpoint import save as _save
    return _save(model, path, source=source)


def load(path, model=None):
    """Rebuild an ACM model from its checkpoint. See acmtool.io.checkpoint."""
    from acmtool.io.checkpoint import load as _load
    return _load(path, model=model)
