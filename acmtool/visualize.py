"""Per-token compute maps, as in the ACM paper's Figure 1: how many learners each image patch runs.

    x = image_prep(model, spec)(pil_image)            # one preprocessed image [C, H, W]
    cmap = compute_map(model, x, prep)                 # the model in eval mode, gates deciding
    cmap.layers["blocks.0.mlp"]                        # [grid_h, grid_w]: k of every patch token
    cmap.mean                                          # mean learners per patch over all ACMs
    draw(cmap, "map.png", layer="all")                 # image, overlay, per-layer grid (PNG, atomic)
    visualize("vit.acm.safetensors", "cat.jpg", "map.png")   # acmtool visualize

Vision transformers only (timm's ViT family; Hugging Face ViT, DeiT, Dinov2): a token's k is read
from each ACM's `last_k` after one forward; the class, register and distillation tokens are left
out and the patch tokens laid out on the patch grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn

from acmtool.errors import AcmInputError
from acmtool.layers.acm import acm_modules

LAYER_CHOICES = "all, mean, or an ACM's name (or a module holding ACMs, such as blocks.0)"
# Hugging Face model types -> tokens before the patches (class; DeiT adds a distillation token).
HF_PREFIX_TOKENS = {"vit": 1, "deit": 2, "dinov2": 1, "dinov2_with_registers": 1}
VISION_MODELS = "timm's ViT family and Hugging Face ViT, DeiT and Dinov2"
COLORMAP = "inferno"


@dataclass
class ComputeMap:
    image: np.ndarray  # what the model saw, in [0, 1]: [H, W] (grayscale) or [H, W, 3]
    layers: dict  # {ACM name: [grid_h, grid_w] int array, the learners each patch token ran}
    min_k: int  # the fewest learners any ACM can run (colour scale)
    max_k: int  # the most (N)
    prefix_tokens: int  # class/register/distillation tokens left out

    @property
    def grid(self) -> tuple:
        return next(iter(self.layers.values())).shape

    @property
    def mean(self) -> np.ndarray:
        """Mean learners per patch over all ACMs: [grid_h, grid_w]."""
        return np.mean(np.stack(list(self.layers.values())), axis=0)

    def select(self, layer: str) -> dict:
        """{title: map} for --layer: all ACMs, only the mean, one ACM, or the ACMs inside one module."""
        if layer == "all":
            return dict(self.layers)
        if layer == "mean":
            return {}
        if layer in self.layers:
            return {layer: self.layers[layer]}
        inside = {n: m for n, m in self.layers.items() if n.startswith(layer + ".")}
        if not inside:
            names = list(self.layers)
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
            raise AcmInputError(f"--layer {layer!r}: no such ACM; give {LAYER_CHOICES} ({shown})")
        return {f"{layer} (mean of {len(inside)})": np.mean(np.stack(list(inside.values())), axis=0)}


# --- the model ------------------------------------------------------------------------------
def vision_layout(model: nn.Module) -> tuple:
    """("timm" | "hf", tokens before the patches) for the vision transformers this draws."""
    if type(model).__module__.startswith("timm.") and hasattr(model, "patch_embed") \
            and hasattr(model, "num_prefix_tokens"):
        return "timm", int(model.num_prefix_tokens)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type in HF_PREFIX_TOKENS:
        return "hf", HF_PREFIX_TOKENS[model_type] + int(getattr(config, "num_register_tokens", 0) or 0)
    what = f"a {model_type} model" if model_type else type(model).__name__
    raise AcmInputError(f"visualize draws compute maps over image patches for vision transformers ({VISION_MODELS}); "
                        f"this checkpoint holds {what}")


def patch_grid(model: nn.Module, kind: str, size: tuple) -> tuple:
    """(grid_h, grid_w) for an input image of `size` (H, W)."""
    if kind == "timm":
        pe = model.patch_embed
        if hasattr(pe, "dynamic_feat_size"):
            return tuple(int(v) for v in pe.dynamic_feat_size(tuple(size)))
        return tuple(int(v) for v in pe.grid_size)
    p = model.config.patch_size
    ph, pw = (p, p) if isinstance(p, int) else tuple(p)
    return size[0] // ph, size[1] // pw


def compute_map(model: nn.Module, pixels: torch.Tensor, prep=None) -> ComputeMap:
    """Run `model` (eval, gated) on one preprocessed image [C, H, W] and read each ACM's k per patch.
    `prep` (acmtool.data.preprocess.ImagePrep) undoes the normalisation for display."""
    kind, prefix = vision_layout(model)
    if pixels.dim() != 3:
        raise AcmInputError(f"compute_map takes one image [C, H, W]; got shape {list(pixels.shape)}")
    grid = patch_grid(model, kind, tuple(pixels.shape[1:]))
    acms = acm_modules(model)
    if not acms:
        raise AcmInputError("the model has no ACMs: convert it with acmtool convert first")
    model.eval()
    for _, m in acms:
        m.last_k = None
    batch = pixels.unsqueeze(0).float().to(next(model.parameters()).device)
    with torch.no_grad():
        model(pixel_values=batch) if kind == "hf" else model(batch)
    patches = grid[0] * grid[1]
    tokens = prefix + patches
    layers, used = {}, []
    for name, m in acms:
        k = m.last_k
        # skipped: an ACM that did not run, or ran on other tokens than the patches (a pooling head's)
        if k is None or k.dim() != 2 or k.shape[-1] not in (tokens, patches):
            continue
        layers[name] = k[0, k.shape[-1] - patches:].reshape(grid).cpu().numpy().astype(np.int64)
        used.append(m)
    if not layers:
        raise AcmInputError(f"no ACM of this model ran on its {tokens} tokens ({prefix} + a {grid[0]}x{grid[1]} "
                            f"patch grid); visualize supports {VISION_MODELS}")
    return ComputeMap(display_image(pixels, prep), layers, min(m.min_k for m in used),
                      max(m.num_learners for m in used), prefix)


def display_image(pixels: torch.Tensor, prep=None) -> np.ndarray:
    x = pixels.detach().float().cpu()
    if prep is not None:
        x = x * torch.tensor(prep.std).view(-1, 1, 1) + torch.tensor(prep.mean).view(-1, 1, 1)
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-12)
    x = x.clamp(0, 1).numpy()
    return x[0] if x.shape[0] == 1 else x[:3].transpose(1, 2, 0)


def open_image(path):
    """A PIL image, or an AcmInputError that says why not."""
    from acmtool.data.images import open_checked
    path = Path(path)
    if not path.is_file():
        raise AcmInputError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    with open_checked(path) as image:
        try:
            image.load()
        except (OSError, ValueError) as e:
            raise AcmInputError(f"{path}: not an image PIL can read ({type(e).__name__})") from None
        return image.copy()


# --- drawing --------------------------------------------------------------------------------
def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise AcmInputError("visualize needs matplotlib: pip install matplotlib (or acmtool[plot])") from None
    return Figure


def draw(cmap: ComputeMap, path, layer: str = "all", title: Optional[str] = None) -> Path:
    """Write the PNG atomically: the image, the mean learners per patch over it, and (layer=all)
    a grid of per-ACM maps, or (layer=NAME) that ACM's map; colour bars labelled "learners"."""
    Figure = _figure_class()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from acmtool.io.atomic import atomic_path
    panels = cmap.select(layer)  # a bad --layer fails before anything is drawn
    path = Path(path)
    norm = Normalize(vmin=cmap.min_k, vmax=cmap.max_k)
    h, w = cmap.image.shape[:2]
    extent = (0, w, h, 0)
    image_kw = {"cmap": "gray", "vmin": 0, "vmax": 1} if cmap.image.ndim == 2 else {}
    if layer in ("all", "mean"):
        overlay, label = cmap.mean, "mean learners per patch, all ACMs"
    else:
        (label, overlay), = panels.items()
        panels = {}
    cols = (6 if len(panels) >= 6 else 4) if panels else 0
    rows = math.ceil(len(panels) / cols) if cols else 0
    fig = Figure(figsize=(10.0, 3.4 + 1.9 * rows), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.4, 1.9 * rows]) if rows else (fig, None)
    ax_image, ax_overlay, ax_map = top.subplots(1, 3)
    ax_image.imshow(cmap.image, extent=extent, **image_kw)
    ax_image.set_title("input (as the model sees it)", fontsize=9)
    ax_overlay.imshow(cmap.image, extent=extent, **image_kw)
    ax_overlay.imshow(overlay, extent=extent, cmap=COLORMAP, norm=norm, alpha=0.55, interpolation="nearest")
    ax_overlay.set_title("over the input", fontsize=9)
    ax_map.imshow(overlay, cmap=COLORMAP, norm=norm, interpolation="nearest")
    ax_map.set_title(f"{label}\nmean {float(np.mean(overlay)):.2f}", fontsize=9)
    top.colorbar(ScalarMappable(norm, COLORMAP), ax=[ax_image, ax_overlay, ax_map], label="learners", shrink=0.85)
    for ax in (ax_image, ax_overlay, ax_map):
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        top.suptitle(title, fontsize=10)
    if rows:
        axes = bottom.subplots(rows, cols, squeeze=False).ravel()
        for ax, (name, m) in zip(axes, panels.items()):
            ax.imshow(m, cmap=COLORMAP, norm=norm, interpolation="nearest")
            ax.set_title(f"{name}\nmean {float(np.mean(m)):.2f}", fontsize=7)
        for ax in axes:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[len(panels):]:
            ax.set_axis_off()
        bottom.colorbar(ScalarMappable(norm, COLORMAP), ax=list(axes), label="learners", shrink=0.9)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


# --- the command ----------------------------------------------------------------------------
def visualize(checkpoint, image, output, layer: str = "all") -> ComputeMap:
    """acmtool visualize: the compute map of CHECKPOINT on one IMAGE file, written to OUTPUT (.png)."""
    from acmtool.data.preprocess import image_prep
    from acmtool.io.checkpoint import load
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise AcmInputError(f"-o {output}: the map is a PNG image; name a .png file")
    _figure_class()
    picture = open_image(image)
    model = load(checkpoint)
    vision_layout(model)
    prep = image_prep(model, model.acmtool_info["source"])
    cmap = compute_map(model, prep(picture), prep)
    cmap.select(layer)
    info = model.acmtool_info
    budget = f", budget {info['budget']}" if info.get("budget") is not None else ""
    static = " (static)" if info.get("static") else ""
    draw(cmap, output, layer, title=f"{Path(checkpoint).name}{budget}{static}: learners per patch, N = {cmap.max_k}")
    return cmap
