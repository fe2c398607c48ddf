"""The ACM checkpoint: one .safetensors file whose metadata rebuilds the model. No pickle.

Metadata keys: format, format_version, acmtool_version and `info`, the JSON of
model.acmtool_info: the source spec, the ACM config, the converted sites, the FLOPs profile,
and, once trained, the budget and the report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from acmtool._version import __version__
from acmtool.config import AcmConfig
from acmtool.convert.acmize import INFO_ATTR, acm_info, acmize_
from acmtool.errors import AcmInputError
from acmtool.io.atomic import atomic_path
from acmtool.io.checkpoint_schema import check_info
from acmtool.io.json_checks import BadValue
from acmtool.layers.control import apply_static_k
from acmtool.io.sources import CHECKPOINT_FORMAT, build_from_spec, check_file, safetensors_metadata, user_spec

FORMAT_VERSION = "1"


def save(model: nn.Module, path, source: Optional[dict] = None) -> Path:
    """Write the checkpoint atomically: a crash never leaves a partial file at `path`."""
    from safetensors.torch import save_model
    info = dict(acm_info(model))
    if source is not None:
        info["source"] = source
    if "source" not in info:
        info["source"] = user_spec(model, info.get("config"))
    metadata = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "acmtool_version": __version__,
                "info": json.dumps(info, default=str)}
    path = Path(path)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_model(model, str(tmp), metadata=metadata)
    return path


def read_info(path) -> dict:
    """The checkpoint's metadata, checked against its schema, without loading any weights."""
    path = Path(path)
    check_file(path)
    meta = safetensors_metadata(path) or {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise AcmInputError(f"{path} is a .safetensors file but not an ACM checkpoint (no acmtool metadata); "
                            f"convert a model with acmtool convert first")
    if meta.get("format_version") != FORMAT_VERSION:
        raise AcmInputError(f"{path}: checkpoint format {_shown(meta.get('format_version'))} is not "
                            f"{FORMAT_VERSION!r}; it was written by another acmtool version "
                            f"({_shown(meta.get('acmtool_version'))})")
    try:
        info = json.loads(meta.get("info") or "")
        return check_info(info)
    except (json.JSONDecodeError, RecursionError) as e:
        raise AcmInputError(f"{path}: the checkpoint metadata is damaged (not JSON: {type(e).__name__})") from None
    except BadValue as e:
        raise AcmInputError(f"{path}: the checkpoint metadata is damaged or foreign ({e})") from None


def load(path, model: Optional[nn.Module] = None) -> nn.Module:
    """Rebuild the source architecture (or take `model`), convert it as recorded, load the weights.

    The metadata is untrusted: after its schema, the model is built on the meta device (nothing
    allocated) and its every tensor compared with the file's header; only a match is built for real.
    """
    from safetensors.torch import load_model
    path = Path(path)
    info = read_info(path)
    header = tensor_header(path)
    if model is None:
        with torch.device("meta"):  # nothing is allocated until the header agrees
            skeleton = build_from_spec(info["source"]).to("meta")
            skeleton = _rebuild(info, skeleton, path)
        check_against_header(skeleton, header, path)
        del skeleton
        model = build_from_spec(info["source"])
    model = _rebuild(info, model, path)
    check_against_header(model, header, path)
    try:
        load_model(model, str(path), strict=True)
    except Exception as e:
        raise AcmInputError(f"{path}: the weights do not match the checkpoint's metadata: {_first_line(e)}") from None
    setattr(model, INFO_ATTR, info)
    if info.get("static"):
        apply_static_k(model, info["budget"])
    return model.eval()


def _rebuild(info: dict, model: nn.Module, path: Path) -> nn.Module:
    """The ACM structure the metadata records, on `model` (weights not loaded)."""
    acmize_(model, AcmConfig.from_dict(info["config"]), init=False)
    rebuilt = [s["path"] for s in getattr(model, INFO_ATTR)["sites"]]
    recorded = [s["path"] for s in info["sites"]]
    if rebuilt != recorded:
        raise AcmInputError(f"{path}: the rebuilt model has ACMs at {len(rebuilt)} places, the checkpoint at "
                            f"{len(recorded)}; the metadata does not match this model")
    return model


def tensor_header(path: Path) -> dict:
    """name -> (dtype, shape) from the safetensors header, without reading the tensors."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as e:
        raise AcmInputError(f"{path}: not a valid .safetensors file ({_first_line(e)})") from None


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def check_against_header(model: nn.Module, header: dict, path: Path) -> None:
    """Every tensor the model would load is in the file with the same shape, and nothing else is."""
    state = model.state_dict(keep_vars=True)
    missing = sorted(names[0] for names in _tied_names(state) if not any(n in header for n in names))
    extra = sorted(set(header) - set(state))
    if missing or extra:
        shown = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(extra[:3])}"
        raise AcmInputError(f"{path}: the weights do not match the checkpoint's metadata ({shown}); the file "
                            f"is damaged or its metadata was edited")
    for name, tensor in state.items():
        if name not in header:  # a tied weight, written under its other name
            continue
        dtype, shape = header[name]
        if tuple(tensor.shape) != shape or _DTYPES.get(dtype) != tensor.dtype:
            raise AcmInputError(f"{path}: the weights do not match the checkpoint's metadata ({name} is "
                                f"{dtype}{list(shape)} in the file, the metadata builds "
                                f"{str(tensor.dtype).removeprefix('torch.')}{list(tensor.shape)}); the file is "
                                f"damaged or its metadata was edited")


def _tied_names(state: dict) -> list:
    """The state dict's names grouped by tensor. A tied weight (Whisper's output projection is its
    token embeddings) is one tensor under several names, and safetensors writes it under one only.
    Grouped by the Parameter object itself: on the meta device every data pointer is 0."""
    groups = {}
    for name, tensor in state.items():
        groups.setdefault(id(tensor), []).append(name)
    return list(groups.values())


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:3])[:400] if lines else type(e).__name__
