"""The timm spec ({"kind": "timm", "name", "kwargs"}) of a timm model built in Python, so that its
checkpoint rebuilds from the command line (`acmtool export/eval/inspect/verify`).

timm keeps the architecture's name (`pretrained_cfg["architecture"]`) but not the arguments it was
created with; for the ViT family they can be read back from the modules. A candidate counts only
if the model it builds (on the meta device: nothing allocated) has every tensor of this one, with
the same shapes, after the same conversion."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


def timm_spec(model: nn.Module, acm_config: Optional[dict]) -> Optional[dict]:
    """The spec that rebuilds `model` (ACMs included, when acm_config is given), or None."""
    if not type(model).__module__.startswith("timm."):
        return None
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if not name:
        return None
    for kwargs in _candidates(model):
        if _rebuilds(name, kwargs, model, acm_config):
            return {"kind": "timm", "name": name, "kwargs": kwargs}
    return None


def _candidates(model: nn.Module) -> list:
    """The arguments timm.create_model may have had: none, then those read back from a ViT."""
    found = {}
    pe = getattr(model, "patch_embed", None)
    blocks = getattr(model, "blocks", None)
    if pe is not None and getattr(pe, "img_size", None) is not None:
        found["img_size"] = list(pe.img_size) if pe.img_size[0] != pe.img_size[1] else int(pe.img_size[0])
        found["patch_size"] = int(pe.patch_size[0])
        found["in_chans"] = int(pe.proj.in_channels)
    if getattr(model, "embed_dim", None) is not None:
        found["embed_dim"] = int(model.embed_dim)
    if blocks is not None and len(blocks):
        found["depth"] = len(blocks)
        attn = getattr(blocks[0], "attn", None)
        if getattr(attn, "num_heads", None) is not None:
            found["num_heads"] = int(attn.num_heads)
        fc1 = getattr(getattr(blocks[0], "mlp", None), "fc1", None)
        if fc1 is not None and found.get("embed_dim"):
            found["mlp_ratio"] = fc1.out_features / found["embed_dim"]
    if getattr(model, "num_classes", None) is not None:
        found["num_classes"] = int(model.num_classes)
    head_only = {k: found[k] for k in ("num_classes",) if k in found}
    return [c for i, c in enumerate([{}, head_only, found]) if c not in [{}, head_only, found][:i]]


def _rebuilds(name: str, kwargs: dict, model: nn.Module, acm_config: Optional[dict]) -> bool:
    import timm
    from acmtool.config import AcmConfig
    from acmtool.convert.acmize import acmize_
    try:
        with torch.device("meta"):
            skeleton = timm.create_model(name, pretrained=False, **kwargs)
            if acm_config is not None:
                acmize_(skeleton, AcmConfig.from_dict(acm_config), init=False)
    except Exception:  # arguments this architecture does not take
        return False
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    return want == got
