"""Where the custom-op library is, what it holds, and a clear error when it is not there or does not fit.

Standard library only (ctypes): a deployment with the platform wheel, onnxruntime and numpy uses it.
"""
from __future__ import annotations

import ctypes
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Optional

from acmtool._version import __version__
from acmtool.errors import AcmInputError

ENV = "ACMTOOL_OPS_LIBRARY"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "_lib"  # where setup.py (and so the wheel) puts it


def _candidates():
    from acmtool.runtime.build import DEFAULT_BUILD_DIR, library_filename
    name = library_filename()
    if os.environ.get(ENV):
        yield Path(os.environ[ENV])
        return
    yield PACKAGE_DIR / name
    yield DEFAULT_BUILD_DIR / name  # a source checkout built with `make build`


def library_path() -> str:
    """The path of libacmtool_ops (register it with SessionOptions.register_custom_ops_library)."""
    tried = list(_candidates())
    for path in tried:
        if path.is_file():
            return str(path)
    raise AcmInputError(f"the acmtool custom-op library is not built (looked in {', '.join(map(str, tried))}); "
                        f"install the platform wheel (pip install acmtool), build it with `make build` or "
                        f"`python -m acmtool.runtime.build`, or set {ENV}")


def library_info(path: Optional[str] = None) -> dict:
    """What the library holds (its AcmtoolOpsInfo): the acmtool version it was built with, the ORT
    API version of its headers and the lowest onnxruntime it loads into, its op versions, the CPU
    kernels compiled in and the one this CPU uses, CUDA or not; plus "path"."""
    return dict(_read_info(str(Path(path or library_path()).resolve())))


@lru_cache(maxsize=None)
def _read_info(path: str) -> tuple:
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise AcmInputError(f"{path}: cannot load the custom-op library ({e}); it is built for x86-64 / aarch64 "
                            f"Linux with glibc: rebuild it on this machine with `make build`") from None
    try:
        info_fn = lib.AcmtoolOpsInfo
    except AttributeError:
        raise AcmInputError(f"{path}: a custom-op library older than acmtool 0.1.0's version checks (no "
                            f"AcmtoolOpsInfo); rebuild it with `make build` or reinstall acmtool") from None
    info_fn.restype = ctypes.c_char_p
    info = json.loads(info_fn().decode())
    info["path"] = path
    return tuple(info.items())


def check_onnxruntime(info: dict, ort_version: str) -> None:
    """Refuse, with what to do, an onnxruntime older than the one the library's headers need: ORT
    would refuse the library too, but with an error about API versions a user cannot act on."""
    need = tuple(int(x) for x in info["onnxruntime_min"].split("."))
    have = tuple(int(x) for x in ort_version.split("+")[0].split(".")[:2] if x.isdigit())
    if have < need:
        raise AcmInputError(f"the acmtool custom-op library ({info['path']}) needs onnxruntime >= "
                            f"{info['onnxruntime_min']} (ORT API {info['ort_api']}); this is onnxruntime "
                            f"{ort_version}: pip install -U onnxruntime (or onnxruntime-gpu)")


def check_op_versions(info: dict, opsets: dict, metadata: dict, model_path) -> None:
    """Refuse a model (its opset imports and metadata, acmtool.runtime.model_header) that needs a
    newer version of our domain than the library implements (a model exported by a newer acmtool),
    naming both versions."""
    want = opsets.get(info["domain"])
    if want is None:
        return
    newest = max(last for _, last in info["ops"].values())
    if want > newest:
        version = metadata.get("acmtool.version")
        exported = f"acmtool {version}" if version else "a newer acmtool"
        raise AcmInputError(f"{model_path}: the model uses {info['domain']} version {want} (exported by "
                            f"{exported}); this custom-op library (acmtool {info['acmtool']}) implements "
                            f"version {newest} at most: upgrade acmtool (pip install -U acmtool) or re-export "
                            f"the model with acmtool {__version__}")


def stale_library_warning(info: dict) -> Optional[str]:
    """A line to print when the library was built by another acmtool version than this package."""
    if info.get("acmtool") not in (__version__, None):
        return (f"acmtool {__version__} is using a custom-op library built by acmtool {info['acmtool']} "
                f"({info['path']}); rebuild it with `make build` if the op has changed")
    return None
