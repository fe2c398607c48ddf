"""acmtool.io.atomic: files get the umask's mode, reach the disk before their name does, and a
failed write leaves nothing behind."""
import os
import stat
import sys

import pytest

from acmtool.io import atomic
from acmtool.io.atomic import atomic_files, atomic_path


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_mode_of_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    with atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    with atomic_files(tmp_path / "m.onnx") as folder:
        (folder / "m.onnx").write_bytes(b"model")
        (folder / "m.onnx.data").write_bytes(b"weights")
    assert [mode(tmp_path / n) for n in ("a.json", "m.onnx", "m.onnx.data")] == [expected] * 3


@pytest.mark.skipif(sys.platform != "linux", reason="names open files through /proc/self/fd")
def test_fsync_before_the_rename_and_of_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                        real_fsync(fd)))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    target = tmp_path / "r.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == str(tmp) and events[1][1] == str(target) and events[2][1] == str(tmp_path)


def test_companions_move_before_the_model(tmp_path, monkeypatch):
    moved = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (moved.append(os.path.basename(b)), real_replace(a, b)))
    with atomic_files(tmp_path / "m.onnx") as folder:
        (folder / "m.onnx").write_bytes(b"model")
        (folder / "m.onnx.data").write_bytes(b"weights")
    assert moved == ["m.onnx.data", "m.onnx"]  # the model never points at data that is not there yet
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


@pytest.mark.parametrize("writer", ["path", "files"])
def test_a_failed_write_leaves_nothing(tmp_path, writer):
    with pytest.raises(OSError, match="disk full"):
        if writer == "path":
            with atomic_path(tmp_path / "x.json") as tmp:
                tmp.write_text("half")
                raise OSError("disk full")
        else:
            with atomic_files(tmp_path / "m.onnx") as folder:
                (folder / "m.onnx.data").write_bytes(b"weights")
                raise OSError("disk full")
    assert not list(tmp_path.iterdir())


def test_files_without_their_model_are_not_published(tmp_path):
    with pytest.raises(FileNotFoundError, match="m.onnx"):
        with atomic_files(tmp_path / "m.onnx") as folder:
            (folder / "m.onnx.data").write_bytes(b"weights")
    assert not list(tmp_path.iterdir())
