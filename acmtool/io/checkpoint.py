"""The ACM checkpoint: one .safetensors file whose metadata rebuilds the model. No pickle.

Metadata keys: format, format_version, acmtool_version and `info`, the JSON of
model.acmtool_info: the source spec, the ACM config, the converted sites, the FLOPs profile,
and, once trained, the budget and the report.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch.nn as nn

from acmtool._version import __version__
from acmtool.config import AcmConfig
from acmtool.convert.acmize import INFO_ATTR, acm_info, acmize_
from acmtool.errors import AcmInputError
from acmtool.io.atomic import atomic_path
from acmtool.layers.control import apply_static_k
from acmtool.io.sources import CHECKPOINT_FORMAT, build_from_spec, check_file, safetensors_metadata, user_spec

FORMAT_VERSION = "1"


def save(model: nn.Module, path, source: Optional[dict] = None) -> Path:
    """Write the checkpoint atomically: a crash never leaves a partial file at `path`."""
    from safetensors.torch import save_model
    info = dict(acm_info(model))
    if source is not None:
        info["source"] = source
    info.setdefault("source", user_spec(model))
    metadata = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, "acmtool_version": __version__,
                "info": json.dumps(info, default=str)}
    path = Path(path)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_model(model, str(tmp), metadata=metadata)
    return path


def read_info(path) -> dict:
    """The checkpoint's metadata, checked, without loading any weights."""
    path = Path(path)
    check_file(path)
    meta = safetensors_metadata(path) or {}
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise AcmInputError(f"{path} is a .safetensors file but not an ACM checkpoint (no acmtool metadata); "
                            f"convert a model with acmtool convert first")
    if meta.get("format_version") != FORMAT_VERSION:
        raise AcmInputError(f"{path}: checkpoint format {meta.get('format_version')!r} is not {FORMAT_VERSION!r}; "
                            f"it was written by another acmtool version ({meta.get('acmtool_version')})")
    try:
        info = json.loads(meta["info"])
        info["config"], info["sites"], info["source"]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise AcmInputError(f"{path}: the checkpoint metadata is damaged ({type(e).__name__}: {e})") from None
    return info


def load(path, model: Optional[nn.Module] = None) -> nn.Module:
    """Rebuild the source architecture (or take `model`), convert it as recorded, load the weights.
    Refuses a checkpoint whose weights do not match its metadata."""
    from safetensors.torch import load_model
    info = read_info(path)
    if model is None:
        model = build_from_spec(info["source"])
    acmize_(model, AcmConfig.from_dict(info["config"]), init=False)
    rebuilt = [s["path"] for s in getattr(model, INFO_ATTR)["sites"]]
    recorded = [s["path"] for s in info["sites"]]
    if rebuilt != recorded:
        raise AcmInputError(f"{path}: the rebuilt model has ACMs at {len(rebuilt)} places, the checkpoint at "
                            f"{len(recorded)}; the metadata does not match this model")
    try:
        missing, unexpected = load_model(model, str(path), strict=True)
    except Exception as e:
        raise AcmInputError(f"{path}: the weights do not match the checkpoint's metadata: {_first_line(e)}") from None
    setattr(model, INFO_ATTR, info)
    if info.get("static"):
        apply_static_k(model, info["budget"])
    return model.eval()


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[:3])[:400] if lines else type(e).__name__
