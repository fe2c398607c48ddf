"""ONNX Runtime sessions with the acmtool custom-op library registered.

Needs onnxruntime (and numpy) only: no torch, no onnx. `session(path)` builds the session;
`session_options()` gives SessionOptions with the library registered, for code that builds its own
sessions (Optimum's `ORTModel.from_pretrained(..., session_options=...)`, a serving stack).
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from acmtool.errors import AcmInputError
from acmtool.runtime.library import check_onnxruntime, check_op_versions, library_info, stale_library_warning
from acmtool.runtime.model_header import ModelHeader, read_header

_warned = set()


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise AcmInputError("running ONNX models needs onnxruntime: pip install onnxruntime "
                            "(onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def needs_library(path) -> bool:
    """Does the model use ai.acmtool ops? (a standard-format model does not need the library)"""
    return "ai.acmtool" in read_header(path).opsets


def session_options(options=None, model=None):
    """`options` (a new onnxruntime.SessionOptions when None) with the acmtool custom-op library
    registered, after checking that this onnxruntime can load it and, when `model` (an ONNX path) is
    given, that the library implements the op version the model uses."""
    ort = import_onnxruntime()
    opts = options if options is not None else ort.SessionOptions()
    _register(ort, opts, None if model is None else read_header(model), model)
    return opts


def _register(ort, opts, header: Optional[ModelHeader], model) -> None:
    info = library_info()
    check_onnxruntime(info, ort.__version__)
    if header is not None:
        check_op_versions(info, header.opsets, header.metadata, model)
    warning = stale_library_warning(info)
    if warning and warning not in _warned:
        _warned.add(warning)
        print(f"acmtool: warning: {warning}", file=sys.stderr)
    opts.register_custom_ops_library(info["path"])


def session(path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
            options=None):
    """An InferenceSession for `path`, with the custom-op library registered when the model needs it.
    Refuses to run silently on another provider than the first one requested."""
    ort = import_onnxruntime()
    header = read_header(path)
    opts = options or ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    if "ai.acmtool" in header.opsets:
        _register(ort, opts, header, path)
    if "acmtool.budget" in header.metadata and options is None:
        # the budget input is an initializer that may be fed, by design; ONNX Runtime warns about
        # that at every session: errors only, unless the caller brought its own options
        opts.log_severity_level = 3
    providers = list(providers or ["CPUExecutionProvider"])
    available = ort.get_available_providers()
    if providers[0] not in available:
        raise AcmInputError(f"{providers[0]} is not available in this onnxruntime ({', '.join(available)}); "
                            f"for CUDA install onnxruntime-gpu")
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:
        raise AcmInputError(f"{path}: ONNX Runtime could not load it: {str(e).strip().splitlines()[0][:300]}") from None
    if sess.get_providers()[0] != providers[0]:
        raise AcmInputError(f"asked for {providers[0]} but ONNX Runtime runs on {sess.get_providers()[0]}")
    return sess
