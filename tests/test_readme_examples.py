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


def shell_lines() -> list:
    """Every `acmtool ...` command line in the README's indented or fenced shell examples."""
    lines = []
    for raw in README.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        for prefix in ("torchrun --nproc-per-node=2 -m acmtool ", "acmtool "):
            if line.startswith(prefix):
                lines.append("acmtool " + line[len(prefix):].split("  #")[0].split(" # ")[0])
    return lines


def test_every_readme_command_line_names_real_commands_and_options():
    # the shell examples cannot all run here (weights files, hours of training), but every command
    # and every --option they name must exist, so that they do not rot either
    from acmtool.cli.main import cli
    lines = shell_lines()
    assert len(lines) > 10
    for line in lines:
        words = line.replace("[", " ").replace("]", " ").replace("|", " ").split()
        command = cli.commands.get(words[1])
        assert command is not None, f"README: no command {words[1]!r} in: {line}"
        known = {o for p in command.params for o in p.opts + p.secondary_opts}
        for w in words[2:]:
            if w.startswith("--"):
                assert w.split("=")[0] in known, f"README: {words[1]} has no option {w} in: {line}"
