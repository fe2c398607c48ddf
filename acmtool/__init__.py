"""acmtool: granular conditional computation with Adaptive Computation Modules (ACMs).

`import acmtool` stays light: torch only; timm, transformers and onnxruntime load when used.
"""
from acmtool._version import __version__
from acmtool.adapters import AttentionLayout, MlpLayout, register_adapter, register_finder
from acmtool.config import AcmConfig
from acmtool.convert import acmize_
from acmtool.errors import AcmCheckFailed, AcmInputError
from acmtool.layers import AcmGate, AcmMlp, AcmModule, AcmProjection, at_budget, fixed_k, set_budget, set_impl

__all__ = ["AcmCheckFailed", "AcmConfig", "AcmGate", "AcmInputError", "AcmMlp", "AcmModule", "AcmProjection",
           "AttentionLayout", "MlpLayout", "__version__", "acmize_", "at_budget", "convert", "export", "fixed_k", "load",
           "register_adapter", "register_finder", "runtime", "save", "set_budget", "set_impl"]

# Reached as attributes and imported on first use, so that `import acmtool` stays light:
# acmtool.runtime.session(...), acmtool.export(model, path, example_inputs=...) (a callable package).
_LAZY = ("data", "export", "runtime")


def convert(model, budget, data=None, output=None, **kwargs):
    """Convert a model to ACMs and train them to the budget; see acmtool.api.convert."""
    from acmtool.api import convert as _convert
    return _convert(model, budget, data, output, **kwargs)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return importlib.import_module(f"acmtool.{name}")
    raise AttributeError(f"module 'acmtool' has no attribute {name!r}")


def save(model, path, source=None):
    """Write the ACM checkpoint (one .safetensors file, atomically). See acmtool.io.checkpoint."""
    from acmtool.io.checkpoint import save as _save
    return _save(model, path, source=source)


def load(path, model=None):
    """Rebuild an ACM model from its checkpoint. See acmtool.io.checkpoint."""
    from acmtool.io.checkpoint import load as _load
    return _load(path, model=model)
