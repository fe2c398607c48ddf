"""kill -9 in the middle of a phase: the same command with --resume finishes the run, and the result
passes acmtool eval. Nothing of the interrupted run may be lost or half-written."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_run import convert_args, write_squares

from acmtool.train.pipeline import run_folder

STEPS = 20  # per phase: room to land the kill inside the gate phase


def acmtool_cli(*args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "acmtool", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, **kw)


def saved_state(path):
    """The run state as the killed process last saved it (written atomically, so whole or absent)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_kill_9_mid_phase_then_resume(tmp_path):
    npz = write_squares(tmp_path / "squares.npz", n=200)
    out = tmp_path / "k.acm.safetensors"
    # state saved after every step (--checkpoint-minutes 0), so the kill lands between two saves
    args = convert_args(npz, out, "--max-steps", STEPS, "--batch-size", 16, "--distill-epochs", 10,
                        "--gate-epochs", 10, "--finetune-epochs", 10, "--checkpoint-minutes", 0)
    p = acmtool_cli(*args)
    state_file = run_folder(out) / "state.pt"
    deadline = time.time() + 120
    try:
        while True:
            state = saved_state(state_file)
            if state and state["phase"] == "gates" and state["step"] >= 3:
                break
            assert p.poll() is None, "convert ended before the kill:\n" + p.stdout.read()
            assert time.time() < deadline, "the gate phase never started"
            time.sleep(0.02)
        p.send_signal(signal.SIGKILL)
    finally:
        p.kill()
        p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    assert not out.exists() and state["done"] == ["distill"]

    done = subprocess.run([sys.executable, "-m", "acmtool", *map(str, args), "--resume"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming from" in done.stdout and "gates at step" in done.stdout, done.stdout
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["k.acm.onnx", "k.acm.safetensors", "k.report.json", "squares.npz"]  # run folder gone, no temp

    ev = subprocess.run([sys.executable, "-m", "acmtool", "eval", str(out), "--data", npz], capture_output=True,
                        text=True, timeout=300)
    assert ev.returncode == 0 and "achieved budget" in ev.stdout, ev.stdout + ev.stderr
