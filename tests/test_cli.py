"""The command line: help everywhere, exit codes 0 / 2, one-line errors, no partial output."""
import subprocess
import sys

import pytest
from click.testing import CliRunner

from acmtool.cli.main import cli

COMMANDS = ["convert", "inspect", "eval", "demo"]


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version_and_help():
    from acmtool import __version__
    assert __version__ in run("--version").output
    assert run("--help").exit_code == 0
    for c in COMMANDS:
        r = run(c, "--help")
        assert r.exit_code == 0 and "Usage" in r.output


def test_convert_then_inspect(tmp_path):
    out = tmp_path / "vit.acm.safetensors"
    r = run("convert", "timm:test_vit", "-o", str(out), "--targets", "mlp+attn")
    assert r.exit_code == 0, r.output
    assert out.is_file()
    r = run("inspect", str(out))
    assert r.exit_code == 0
    assert "blocks.0.mlp" in r.output and "blocks.0.attn.qkv.parts.0" in r.output
    assert "x original" in r.output
    r = run("inspect", str(out), "--json")
    assert '"flops_at_k"' in r.output


def cli_subprocess(*args, cwd):
    return subprocess.run([sys.executable, "-m", "acmtool", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args,message", [
    (["convert", "timm:no_such_model", "-o", "out.safetensors"], "timm has no model"),
    (["convert", "missing.pt", "-o", "out.safetensors"], "no such file"),
    (["convert", "empty.pt", "-o", "out.safetensors"], "empty"),
    (["convert", "timm:test_vit", "--model-args", "{bad", "-o", "out.safetensors"], "not valid JSON"),
    (["inspect", "empty.pt"], "empty"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    (tmp_path / "empty.pt").write_bytes(b"")
    p = cli_subprocess(*args, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("acmtool: error:") and message in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_usage_errors_exit_2():
    assert run("convert").exit_code == 2
    assert run("convert", "timm:test_vit", "--learners", "0").exit_code == 2
    assert run("nonsense").exit_code == 2


def test_every_command_that_writes_a_file_has_force():
    for c in ("convert", "export", "visualize", "bench", "eval"):
        r = run(c, "--help")
        assert r.exit_code == 0 and "--force" in r.output, c
