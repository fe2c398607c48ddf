"""The IDX format of (Fashion-)MNIST, gzipped: 0, 0, a type code, the number of dims, then each
dim as a big-endian int32, then the data."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from acmtool.errors import AcmInputError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise AcmInputError(f"{path}: not a readable gzip file ({e}); reinstall the package that ships it") \
            from None
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, where: str = "IDX data") -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise AcmInputError(f"{where}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise AcmInputError(f"{where}: truncated IDX header")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[raw[2]])
    count = int(np.prod(shape))
    if len(raw) - header != count * dtype.itemsize:
        raise AcmInputError(f"{where}: {len(raw) - header} data bytes for shape {shape}; the file is damaged")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
