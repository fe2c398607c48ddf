"""acmtool: granular conditional computation with Adaptive Computation Modules (ACMs).

`import acmtool` is light and needs no torch: the names below load their modules on first use, so
that a deployment with only onnxruntime and numpy can use acmtool.runtime (the custom-op library,
sessions, the budget controller) from the platform wheel.
"""
import sys as _sys
import types as _types

from acmtool._version import __version__
from acmtool.errors import AcmCheckFailed, AcmInputError

__all__ = ["AcmCheckFailed", "AcmConfig", "AcmGate", "AcmInputError", "AcmMlp", "AcmModule", "AcmProjection",
           "AttentionLayout", "MlpLayout", "__version__", "acmize_", "at_budget", "convert", "export", "fixed_k", "load",
           "register_adapter", "register_finder", "runtime", "save", "set_budget", "set_impl"]

# Public names -> the module that defines them (these need torch).
_NAMES = {
    "AttentionLayout": "acmtool.adapters", "MlpLayout": "acmtool.adapters", "register_adapter": "acmtool.adapters",
    "register_finder": "acmtool.adapters", "AcmConfig": "acmtool.config", "acmize_": "acmtool.convert",
    **{n: "acmtool.layers" for n in ("AcmGate", "AcmMlp", "AcmModule", "AcmProjection", "at_budget", "fixed_k",
                                     "set_budget", "set_impl")},
}
# Subpackages reached as attributes: acmtool.runtime.session(...), acmtool.export(model, path, ...)
# (a callable package).
_LAZY = ("data", "export", "runtime")


def convert(model, budget, data=None, output=None, **kwargs):
    """Convert a model to ACMs and train them to the budget; see acmtool.api.convert."""
    from acmtool.api import convert as _convert
    return _convert(model, budget, data, output, **kwargs)


def __getattr__(name):
    import importlib
    if name in _NAMES:
        return getattr(importlib.import_module(_NAMES[name]), name)
    if name in _LAZY:
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


class _Package(_types.ModuleType):
    """`acmtool.convert` is the function above, not the subpackage of the same name: importing that
    subpackage later (lazily, on first use) must not replace the function (the subpackage stays
    reachable through `import acmtool.convert.x` / sys.modules)."""

    def __setattr__(self, name, value):
        if name == "convert" and isinstance(value, _types.ModuleType):
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
