"""The opset imports and metadata of an ONNX file, read without onnx or protobuf and without reading
the graph: what a session needs to know before ONNX Runtime loads the model (does it use our domain,
which version, does it have the budget input), on a deployment that has only onnxruntime and numpy.

A ModelProto's top-level fields are read off the protobuf wire format; the graph (field 7, nearly
all of the file) is skipped with one seek.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from acmtool.errors import AcmInputError

_OPSET_IMPORT = 8  # ModelProto.opset_import: OperatorSetIdProto {domain = 1, version = 2}
_METADATA_PROPS = 14  # ModelProto.metadata_props: StringStringEntryProto {key = 1, value = 2}
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


@dataclass
class ModelHeader:
    opsets: dict = field(default_factory=dict)  # domain ("" is ONNX's own) -> version
    metadata: dict = field(default_factory=dict)


def _varint(read) -> int:
    value, shift = 0, 0
    while True:
        b = read(1)
        if not b:
            raise EOFError
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes):
    """(field number, value) of a small message held in memory."""
    pos = 0

    def read(n):
        nonlocal pos
        chunk = data[pos:pos + n]
        pos += n
        return chunk
    while pos < len(data):
        key = _varint(read)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            yield number, _varint(read)
        elif wire == _LEN:
            yield number, read(_varint(read))
        elif wire in (_I64, _I32):
            read(8 if wire == _I64 else 4)
        else:
            raise ValueError(f"wire type {wire}")


def _read(f: BinaryIO, size: int) -> ModelHeader:
    header = ModelHeader()
    while f.tell() < size:
        key = _varint(f.read)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _varint(f.read)
        elif wire == _LEN:
            length = _varint(f.read)
            if number in (_OPSET_IMPORT, _METADATA_PROPS):
                sub = dict(_fields(f.read(length)))
                if number == _OPSET_IMPORT:
                    header.opsets[sub.get(1, b"").decode()] = int(sub.get(2, 0))
                else:
                    header.metadata[sub.get(1, b"").decode()] = sub.get(2, b"").decode()
            else:
                f.seek(length, 1)
        elif wire in (_I64, _I32):
            f.seek(8 if wire == _I64 else 4, 1)
        else:
            raise ValueError(f"wire type {wire}")
    if f.tell() != size:
        raise ValueError("a field runs past the end of the file")
    return header


def read_header(path) -> ModelHeader:
    """The opset imports and metadata of the ONNX model at `path`; a clear error for a file that is
    not one."""
    path = Path(path)
    if not path.is_file():
        raise AcmInputError(f"{path}: no such ONNX file")
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            header = _read(f, size)
    except (EOFError, ValueError, UnicodeDecodeError) as e:
        raise AcmInputError(f"{path}: not an ONNX model (truncated or another format: {e or 'ends mid-field'})") from None
    if not header.opsets:
        raise AcmInputError(f"{path}: not an ONNX model (it imports no operator set)")
    return header
