"""Where the custom-op library is, and a clear error when it is not there."""
from __future__ import annotations

import os
from pathlib import Path

from acmtool.errors import AcmInputError

ENV = "ACMTOOL_OPS_LIBRARY"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "_lib"  # where setup.py puts it


def _candidates():
    from acmtool.runtime.build import DEFAULT_BUILD_DIR, library_filename
    name = library_filename()
    if os.environ.get(ENV):
        yield Path(os.environ[ENV])
        return
    yield PACKAGE_DIR / name
    yield DEFAULT_BUILD_DIR / name  # a source checkout built with `make build`


def library_path() -> str:
    """The path of libacmtool_ops (register it with SessionOptions.register_custom_ops_library)."""
    tried = list(_candidates())
    for path in tried:
        if path.is_file():
            return str(path)
    raise AcmInputError(f"the acmtool custom-op library is not built (looked in {', '.join(map(str, tried))}); "
                        f"build it with `make build` or `python -m acmtool.runtime.build`, or set {ENV}")
