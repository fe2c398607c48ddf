"""Write files atomically: a temporary file (or folder) beside the target, fsynced, then renamed.

A crash leaves either the old file or the new one, never half of one. Files get the mode a plain
open() would give them (0666 & ~umask), not mkstemp's private 0600.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def file_mode() -> int:
    """0666 & ~umask: what open(path, 'w') creates."""
    try:  # Linux tells the umask without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform or filesystem can fsync a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _publish(tmp: Path, path: Path, mode: int) -> None:
    os.chmod(tmp, mode)
    _fsync_file(tmp)  # the data reaches the disk before the name points at it
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _publish(Path(tmp), path, file_mode())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_files(path):
    """Yield a private folder beside `path` for a file and its companions (an ONNX model and its
    external data `NAME.data`): write them there under their final names, so that the names
    recorded inside (the data file's `location`) are already right. On success every file moves
    into `path`'s folder, `path` last, so the model never appears before its data; on error, or
    after, the folder is gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if not (tmp / path.name).is_file():
            raise FileNotFoundError(f"{path.name} was not written")
        mode = file_mode()
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == path.name):
            _publish(f, path.parent / f.name, mode)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_folder(new: Path, folder: Path) -> None:
    """new -> folder (both on one filesystem); an old folder moves aside first and goes only once the
    new one is in place, so a crash leaves the old folder or the new one, whole."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
        os.rename(folder, old / folder.name)
    os.rename(new, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
