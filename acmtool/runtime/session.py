"""ONNX Runtime sessions with the acmtool custom-op library registered."""
from __future__ import annotations

from typing import Optional, Sequence

from acmtool.errors import AcmInputError
from acmtool.runtime.library import library_path


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise AcmInputError("running ONNX models needs onnxruntime: pip install onnxruntime "
                            "(onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def needs_library(path) -> bool:
    """Does the model use ai.acmtool ops? (a standard-format model does not need the library)"""
    return _needs(path)[0]


def _needs(path) -> tuple[bool, bool]:
    """(uses ai.acmtool ops, has acmtool's budget input), from one read of the graph."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return (any(o.domain == "ai.acmtool" for o in model.opset_import),
            any(p.key == "acmtool.budget" for p in model.metadata_props))


def session(path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
            options=None):
    """An InferenceSession for `path`, with the custom-op library registered when the model needs it.
    Refuses to run silently on another provider than the first one requested."""
    ort = import_onnxruntime()
    opts = options or ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    library, knob = _needs(path)
    if library:
        opts.register_custom_ops_library(library_path())
    if knob and options is None:
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
