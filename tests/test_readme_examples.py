"""The README's Python examples run as written (in a scratch folder), so that they cannot rot."""
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_a_python_example():
    assert python_blocks()


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_python_example_runs(index, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from acmtool.errors import AcmInputError
    from acmtool.runtime import library_path
    try:
        library_path()
    except AcmInputError as e:
        pytest.skip(f"custom-op library not built: {e}")
    import numpy as np
    import torch
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)  # the example's random weights and inputs: the same every run
    scope = {"__name__": "readme_example"}
    exec(compile(python_blocks()[index], f"README.md python block {index}", "exec"), scope)
    if "logits" in scope:  # the example ends in ONNX Runtime: its output is the model's
        with torch.no_grad():
            ref = scope["model"](scope["x"]).numpy()
        np.testing.assert_allclose(scope["logits"], ref, atol=1e-4, rtol=0)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]
