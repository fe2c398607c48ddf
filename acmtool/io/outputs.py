"""The files a command writes, named after the checkpoint, and the rule that an existing one is
never replaced without --force (checked before any long work starts)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable


def checkpoint_stem(checkpoint) -> Path:
    """NAME for NAME.acm.safetensors (and NAME.safetensors): what the outputs are named after."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors").removesuffix(".acm"))


def onnx_path(checkpoint) -> Path:
    """NAME.acm.onnx beside NAME.acm.safetensors: never the dense model's NAME.onnx."""
    stem = checkpoint_stem(checkpoint)
    return stem.with_name(stem.name + ".acm.onnx")


def report_path(checkpoint) -> Path:
    stem = checkpoint_stem(checkpoint)
    return stem.with_name(stem.name + ".report.json")


def external_data_path(onnx_model) -> Path:
    """Where the weights of an ONNX model too large for one protobuf go (NAME.acm.onnx.data)."""
    onnx_model = Path(onnx_model)
    return onnx_model.with_name(onnx_model.name + ".data")


def onnx_outputs(onnx_model) -> list:
    return [Path(onnx_model), external_data_path(onnx_model)]


def refuse_existing(paths: Iterable, force: bool = False) -> None:
    """AcmInputError (exit 2) naming the first of `paths` that exists, unless force."""
    from acmtool.errors import AcmInputError
    for p in map(Path, paths):
        if p.is_dir():
            raise AcmInputError(f"{p} is a folder; name a file to write")
        if not force and (p.exists() or p.is_symlink()):
            raise AcmInputError(f"{p} already exists: pass --force to replace it, or choose another output name")
