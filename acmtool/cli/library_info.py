"""`acmtool library-path --info`: the custom-op library's own record, and whether it fits here."""
from __future__ import annotations

from acmtool._version import __version__


def _onnxruntime_line(info: dict) -> str:
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime:    not installed (pip install onnxruntime)"
    from acmtool.errors import AcmInputError
    from acmtool.runtime.library import check_onnxruntime
    try:
        check_onnxruntime(info, onnxruntime.__version__)
    except AcmInputError:
        return f"onnxruntime:    {onnxruntime.__version__} here: TOO OLD, the library needs >= {info['onnxruntime_min']}"
    return f"onnxruntime:    {onnxruntime.__version__} here: ok"


def describe(info: dict) -> str:
    ops = ", ".join(f"{name} v{lo}" if lo == hi else f"{name} v{lo}-{hi}" for name, (lo, hi) in info["ops"].items())
    built_by = info["acmtool"] + ("" if info["acmtool"] == __version__ else f" (this acmtool is {__version__}: rebuild)")
    return "\n".join([
        info["path"],
        f"built by:       acmtool {built_by}",
        f"ORT API:        {info['ort_api']} (needs onnxruntime >= {info['onnxruntime_min']})",
        _onnxruntime_line(info),
        f"ops:            {info['domain']}: {ops}",
        f"CPU kernels:    {', '.join(info['cpu_isas'])}; this CPU uses {info['cpu_isa']}",
        f"CUDA kernel:    {'yes' if info['cuda'] else 'no (CPU only; make build-cuda adds it)'}",
    ])
