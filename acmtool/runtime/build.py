"""Build the ONNX Runtime custom-op library (custom_ops/ -> libacmtool_ops) with CMake.

Used by the tests (and meant for setup.py): standard library only, so that it runs before acmtool's
dependencies are installed (`runpy.run_path("acmtool/runtime/build.py")` works from setup.py).

    build_custom_ops(build_dir="build/custom_ops")   # -> Path to the built library
    build_custom_ops("build/custom_ops_cuda", cmake_args=["-DACMTOOL_CUDA=ON"])   # options go to cmake
    python acmtool/runtime/build.py [BUILD_DIR] [-DVAR=VALUE ...]                  # the same from a shell

CMake finds the ONNX Runtime headers itself (custom_ops/cmake/OrtHeaders.cmake: ORT_INCLUDE_DIR, a
per-user cache, or `npm pack` once). A missing tool (cmake, a C++ compiler, the headers) raises
BuildUnavailable, which callers may treat as "skip"; anything else, such as a compile error, raises
BuildFailed, which they must not.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = REPO_ROOT / "custom_ops"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "custom_ops"

# Printed by CMake when the ONNX Runtime headers cannot be had (no ORT_INCLUDE_DIR, no cache, no npm).
_HEADERS_MARKER = "ACMTOOL_ORT_HEADERS_UNAVAILABLE"
_NO_COMPILER_MARKERS = ("No CMAKE_CXX_COMPILER could be found", "CMAKE_CXX_COMPILER not set",
                        "is not able to compile a simple test program")


class BuildUnavailable(RuntimeError):
    """This machine lacks something the build needs (cmake, a C++ compiler, the ORT headers)."""


class BuildFailed(RuntimeError):
    """The build ran and failed: a bug to fix, never a reason to skip."""


def library_filename() -> str:
    if sys.platform == "win32":
        return "acmtool_ops.dll"
    if sys.platform == "darwin":
        return "libacmtool_ops.dylib"
    return "libacmtool_ops.so"


def find_library(build_dir: os.PathLike | str = DEFAULT_BUILD_DIR) -> Optional[Path]:
    """The library in a CMake build folder (single- or multi-config), or None."""
    build_dir = Path(build_dir)
    for candidate in (build_dir / library_filename(), build_dir / "Release" / library_filename()):
        if candidate.is_file():
            return candidate
    return None


def build_custom_ops(build_dir: os.PathLike | str = DEFAULT_BUILD_DIR, source_dir: os.PathLike | str = SOURCE_DIR,
                     *, config: str = "Release", jobs: Optional[int] = None,
                     cmake_args: Sequence[str] = ()) -> Path:
    """Configure (first time) and build custom_ops; returns the library's path.

    Incremental: a second call on an up-to-date tree costs about a second (configure + a no-op build). Builds of one folder
    from several processes at once (pytest-xdist) take turns through a lock file.
    """
    source_dir, build_dir = Path(source_dir), Path(build_dir)
    if not (source_dir / "CMakeLists.txt").is_file():
        raise BuildUnavailable(f"no CMake project at {source_dir} (custom_ops/ ships with the source tree only)")
    cmake = shutil.which("cmake")
    if cmake is None:
        raise BuildUnavailable("cmake is not installed (apt-get install cmake, or pip install cmake)")
    build_dir.mkdir(parents=True, exist_ok=True)
    with _locked(build_dir / ".build.lock"):
        # Configuring every time is cheap on a configured tree and repairs one whose last configure failed.
        _run([cmake, "-S", str(source_dir), "-B", str(build_dir), f"-DCMAKE_BUILD_TYPE={config}", *cmake_args],
             "configure")
        _run([cmake, "--build", str(build_dir), "--config", config, "--parallel", str(jobs or os.cpu_count() or 2)],
             "build")
    library = find_library(build_dir)
    if library is None:
        raise BuildFailed(f"the build finished but {library_filename()} is not in {build_dir}")
    return library


def _run(command: list[str], step: str) -> None:
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode == 0:
        return
    out = proc.stdout or ""
    tail = "\n".join(out.splitlines()[-40:])
    if step == "configure":
        if _HEADERS_MARKER in out:
            why = out.split(_HEADERS_MARKER, 1)[1].split("Call Stack", 1)[0]
            raise BuildUnavailable("ONNX Runtime headers unavailable: " + " ".join(why.lstrip(":").split()))
        if any(marker in out for marker in _NO_COMPILER_MARKERS):
            raise BuildUnavailable("no working C++ compiler (apt-get install g++)")
    raise BuildFailed(f"cmake {step} failed ({' '.join(command)}):\n{tail}")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: no lock; concurrent builds of one folder are the caller's problem
        yield
        return
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


if __name__ == "__main__":  # python acmtool/runtime/build.py [BUILD_DIR] [-DVAR=VALUE ...] (passed to cmake)
    _args = sys.argv[1:]
    _dirs = [a for a in _args[:1] if not a.startswith("-")]
    print(build_custom_ops(*_dirs, cmake_args=_args[len(_dirs):]))
