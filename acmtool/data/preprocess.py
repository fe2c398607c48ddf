"""How the model wants its images: size, channels, normalisation, read from the model's own config.

timm models: timm's eval transform from resolve_data_config, with the channels and image size taken
from the model itself (a timm model built with in_chans=1, img_size=28 keeps the pretrained cfg of
its 3x224 parent). Hugging Face vision models: preprocessor_config.json in the model folder.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn

from acmtool.errors import AcmInputError

NO_IMAGE_CONFIG = "give a .npz whose x already holds the model's inputs"


@dataclass
class ImagePrep:
    channels: int
    size: Optional[tuple]  # (H, W) after preprocessing; None when it depends on the image
    mean: tuple
    std: tuple
    pil_transform: Callable  # a PIL image in `mode` -> float tensor [C, H, W]

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    def __call__(self, image) -> torch.Tensor:
        return self.pil_transform(image.convert(self.mode))

    def from_gray_uint8(self, pixels: np.ndarray) -> torch.Tensor:
        """A [H, W] uint8 grayscale image (fashion-mnist). At the model's own size it is only
        scaled and normalised: timm's resize-then-crop would blur a 28x28 image for a 28x28 model."""
        if self.size is not None and tuple(pixels.shape) == tuple(self.size):
            x = torch.from_numpy(np.ascontiguousarray(pixels)).float().div_(255.0)
            x = x.unsqueeze(0).expand(self.channels, -1, -1)
            mean = torch.tensor(self.mean).view(-1, 1, 1)
            std = torch.tensor(self.std).view(-1, 1, 1)
            return (x - mean) / std
        from PIL import Image
        return self(Image.fromarray(pixels, mode="L"))


def image_prep(model: nn.Module, spec: dict) -> ImagePrep:
    config = getattr(model, "config", None)
    if spec.get("kind") == "hf" or _is_hf_config(config):
        return _hf_prep(config, spec.get("path"))
    if spec.get("kind") == "timm" or hasattr(model, "pretrained_cfg") or hasattr(model, "default_cfg"):
        return _timm_prep(model)
    raise AcmInputError(f"acmtool cannot tell which image size and normalisation {type(model).__name__} "
                        f"expects; {NO_IMAGE_CONFIG}")


def _is_hf_config(config) -> bool:
    return config is not None and type(config).__module__.startswith("transformers.")


# --- timm -----------------------------------------------------------------------------------
def _timm_prep(model: nn.Module) -> ImagePrep:
    import timm.data
    cfg = timm.data.resolve_data_config({}, model=model)
    channels = _check_channels(_model_channels(model) or cfg["input_size"][0], type(model).__name__)
    size = _model_img_size(model) or tuple(cfg["input_size"][1:])
    cfg["input_size"] = (channels, *size)
    cfg["mean"], cfg["std"] = _fit(cfg["mean"], channels), _fit(cfg["std"], channels)
    return ImagePrep(channels, size, cfg["mean"], cfg["std"], timm.data.create_transform(**cfg))


def _model_channels(model: nn.Module) -> Optional[int]:
    if isinstance(getattr(model, "in_chans", None), int):
        return model.in_chans
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first_conv.in_channels if first_conv is not None else None


def _model_img_size(model: nn.Module) -> Optional[tuple]:
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(img_size, int):
        return (img_size, img_size)
    return tuple(img_size) if img_size else None


def _fit(values, channels: int) -> tuple:
    """Mean/std per channel: a 3-channel cfg on a 1-channel model is averaged, one value repeated."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if channels == 1:
        return (sum(values) / len(values),)
    if len(values) == 1:
        return values * channels
    raise AcmInputError(f"the model's normalisation has {len(values)} values for {channels} channels")


def _check_channels(channels: int, what: str) -> int:
    if channels not in (1, 3):
        raise AcmInputError(f"{what} takes {channels}-channel images; image data can be grayscale or RGB "
                            f"only: {NO_IMAGE_CONFIG}")
    return channels


# --- Hugging Face ---------------------------------------------------------------------------
# PIL's resample codes, as preprocessor_config.json stores them.
_RESAMPLE = {0: "NEAREST", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC", 4: "BOX", 5: "HAMMING"}


def _hf_prep(config, path: Optional[str]) -> ImagePrep:
    if config is None or not getattr(config, "image_size", None):
        kind = getattr(config, "model_type", "this") if config is not None else "this"
        raise AcmInputError(f"the {kind} model does not take images; give data it takes (a .txt file for a "
                            f"text model, a .npz of its inputs otherwise)")
    channels = _check_channels(int(getattr(config, "num_channels", 3)), config.model_type)
    pp = _read_preprocessor_config(path, config)
    from torchvision import transforms as T
    steps: list = []
    resize, size = _hf_resize(pp.get("size"), config.image_size) if pp.get("do_resize", True) else (None, None)
    if resize is not None:
        mode = getattr(T.InterpolationMode, _RESAMPLE.get(pp.get("resample", 2), "BILINEAR"))
        steps.append(T.Resize(resize, interpolation=mode, antialias=True))
    if pp.get("do_center_crop") and pp.get("crop_size") is not None:
        crop, size = _hf_resize(pp["crop_size"], config.image_size)
        steps.append(T.CenterCrop(crop))
    elif resize is not None and size is None:  # shortest_edge alone: crop so that a batch stacks
        size = (config.image_size, config.image_size) if isinstance(config.image_size, int) \
            else tuple(config.image_size)
        steps.append(T.CenterCrop(size))
    scale = float(pp.get("rescale_factor", 1 / 255)) if pp.get("do_rescale", True) else 1.0
    steps.append(_ToFloat(scale))
    mean = _fit(pp.get("image_mean", (0.5,)), channels)
    std = _fit(pp.get("image_std", (0.5,)), channels)
    if pp.get("do_normalize", True):
        steps.append(T.Normalize(mean, std))
    else:
        mean, std = (0.0,) * channels, (1.0,) * channels
    return ImagePrep(channels, size if isinstance(size, tuple) else None, mean, std, T.Compose(steps))


def _read_preprocessor_config(path: Optional[str], config) -> dict:
    file = Path(path) / "preprocessor_config.json" if path else None
    if file is None or not file.is_file():
        # ViTImageProcessor's defaults, at the size the model was built for.
        warnings.warn(f"no preprocessor_config.json{' in ' + str(path) if path else ''}: images are resized "
                      f"to {config.image_size} and normalised with mean 0.5, std 0.5", stacklevel=3)
        return {"size": config.image_size}
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AcmInputError(f"{file}: not readable JSON ({e}); fix or remove it") from None


def _hf_resize(size, default: int):
    """(torchvision Resize/CenterCrop size, final (H, W) or None). An int or height/width is an exact
    size; shortest_edge resizes the shorter side and keeps the aspect ratio."""
    if size is None:
        size = default
    if isinstance(size, int):
        return (size, size), (size, size)
    if "height" in size and "width" in size:
        hw = (int(size["height"]), int(size["width"]))
        return hw, hw
    if "shortest_edge" in size:
        return int(size["shortest_edge"]), None
    raise AcmInputError(f"preprocessor_config.json: image size {size} is not one acmtool reads "
                        f"(height/width or shortest_edge)")


class _ToFloat:
    """PIL -> float tensor times `scale` (HF's rescale_factor, usually 1/255)."""

    def __init__(self, scale: float):
        self.scale = scale

    def __call__(self, image) -> torch.Tensor:
        from torchvision.transforms.functional import pil_to_tensor
        return pil_to_tensor(image).float().mul_(self.scale)
