"""The setup a result was measured on, for file names and JSON headers."""
from __future__ import annotations

import os
import platform

import torch


def setup() -> dict:
    info = {"cores": os.cpu_count(), "torch": torch.__version__.split("+")[0], "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine()}
    try:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def tag() -> str:
    """cpu2-pt2.14.1-ort1.32.0: what a result file's name records."""
    s = setup()
    return f"cpu{s['cores']}-pt{s['torch']}" + (f"-ort{s['onnxruntime']}" if "onnxruntime" in s else "")
