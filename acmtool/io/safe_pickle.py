"""torch.load of a whole module without running arbitrary code.

torch.load(weights_only=True) refuses every class it does not know; we add an allow-list: module
and config classes from torch.nn, timm and transformers, enums from those packages, and the pure
math functions of torch.nn.functional. Anything else (and any function that could do I/O or run
code) is refused with a message that names --trust-pickle.
"""
from __future__ import annotations

import enum
import importlib
import inspect
from pathlib import Path

import torch
import torch.nn as nn

from acmtool.errors import AcmInputError

_PACKAGES = ("torch.nn.", "timm.", "transformers.")
_MATH_MODULES = ("torch.nn.functional", "torch._C._nn")


def _resolve(name: str):
    module, _, attr = name.rpartition(".")
    try:
        obj = importlib.import_module(module)
    except ImportError:
        return None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    return obj


def _allowed(name: str, obj) -> bool:
    if obj is None:
        return False
    module = name.rpartition(".")[0]
    if module in _MATH_MODULES:
        return callable(obj) and not inspect.isclass(obj)
    if not name.startswith(_PACKAGES) or not inspect.isclass(obj):
        return False
    if issubclass(obj, (nn.Module, enum.Enum)):
        return True
    try:
        from transformers import PretrainedConfig
    except ImportError:
        return False
    return issubclass(obj, PretrainedConfig)


def load_untrusted(path: Path, trust_pickle: bool = False):
    """Load a .pt/.pth file; a whole module only when its every class is on the allow-list."""
    if trust_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # corrupt files raise many types
            raise AcmInputError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {e})") from None
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:
        raise AcmInputError(f"{path}: not a readable PyTorch zip file ({type(e).__name__}: {_short(e)}); "
                            f"if it is a legacy pickle from a source you trust, pass --trust-pickle") from None
    resolved = {n: _resolve(n) for n in names}
    refused = sorted(n for n, obj in resolved.items() if not _allowed(n, obj))
    if refused:
        shown = ", ".join(refused[:5]) + (" ..." if len(refused) > 5 else "")
        raise AcmInputError(f"{path} holds pickled objects outside acmtool's allow-list ({shown}); loading them "
                            f"could run code. If you trust this file, pass --trust-pickle")
    try:
        with torch.serialization.safe_globals(list(resolved.values())):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AcmInputError(f"{path}: could not be loaded safely ({type(e).__name__}: {_short(e)}); "
                            f"if you trust this file, pass --trust-pickle") from None


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
