"""The exact classes and functions a pickled module may name: plain layers and configs.

Every entry is a plain building block: the weights-only loader makes it with `cls.__new__` and fills
its `__dict__`, so its constructor never runs (and `safe_pickle` refuses a pickle that would call
one). A name is looked up here by string first; only a module listed here is ever imported, so a
file cannot make us import anything it names.
"""
from __future__ import annotations

import enum
import importlib
from functools import lru_cache
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F

_TORCH_LAYERS = (
    nn.Linear, nn.Bilinear, nn.Identity, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
    nn.LayerNorm, nn.GroupNorm, nn.RMSNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm1d, nn.InstanceNorm2d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Embedding,
    nn.GELU, nn.ReLU, nn.ReLU6, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Softmax, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
    nn.LeakyReLU, nn.ELU, nn.GLU, nn.Softplus, nn.PReLU,
    nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict,
    nn.Flatten, nn.Unflatten, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MultiheadAttention, nn.modules.linear.NonDynamicallyQuantizableLinear,
    nn.TransformerEncoder, nn.TransformerEncoderLayer, nn.TransformerDecoder, nn.TransformerDecoderLayer,
)
# Activation functions that modules keep as attributes (never called by the pickle itself).
_TORCH_FUNCTIONS = (F.gelu, F.relu, F.silu, F.tanh, F.sigmoid, F.softmax, F.mish, F.hardswish, F.leaky_relu,
                    F.elu, F.softplus, F.glu, F.relu6, F.layer_norm, F.linear)

# Module -> the names it may give, for packages imported only when a file names one of them.
_TIMM = {
    "timm.models.vision_transformer": ("Block", "ResPostBlock", "ParallelScalingBlock", "ParallelThingsBlock",
                                       "VisionTransformer"),
    "timm.models.deit": ("VisionTransformerDistilled",),
    "timm.layers.attention": ("Attention",),
    "timm.layers.mlp": ("Mlp", "GluMlp", "SwiGLU", "GatedMlp"),
    "timm.layers.norm": ("LayerNorm", "LayerNormFp32", "RmsNorm", "RmsNormFp32", "GroupNorm", "GroupNorm1"),
    "timm.layers.patch_embed": ("PatchEmbed",),
    "timm.layers.format": ("Format",),
    "timm.layers.layer_scale": ("LayerScale",),
    "timm.layers.drop": ("DropPath",),
    "timm.layers.attention_pool": ("AttentionPoolLatent",),
    "timm.layers.activations": ("GELU", "GELUTanh", "QuickGELU", "Swish", "Mish", "Sigmoid", "Tanh"),
}
# Hugging Face families that acmtool has adapters for: their layers, models and configs.
_HF_FAMILIES = ("bert", "roberta", "vit", "deit", "dinov2", "wav2vec2", "whisper")
_HF_SHARED = {
    "transformers.activations": ("GELUActivation", "FastGELUActivation", "NewGELUActivation", "QuickGELUActivation",
                                 "SiLUActivation", "ClippedGELUActivation", "LinearActivation"),
    "transformers.generation.configuration_utils": ("GenerationConfig",),
}


def _name(obj) -> str:
    return f"{obj.__module__}.{getattr(obj, '__qualname__', obj.__name__)}"


@lru_cache(maxsize=1)
def _torch_entries() -> dict:
    return {_name(o): o for o in _TORCH_LAYERS + _TORCH_FUNCTIONS}


def _hf_module_allowed(module: str) -> bool:
    parts = module.split(".")
    return (len(parts) == 4 and parts[:2] == ["transformers", "models"] and parts[2] in _HF_FAMILIES
            and parts[3] in (f"modeling_{parts[2]}", f"configuration_{parts[2]}"))


def _hf_class_allowed(obj) -> bool:
    from transformers import PretrainedConfig
    return issubclass(obj, (nn.Module, PretrainedConfig))


def resolve(name: str) -> Optional[object]:
    """The allowed object a pickle names, or None; imports only modules this file lists."""
    obj = _torch_entries().get(name)
    if obj is not None:
        return obj
    module, _, attr = name.rpartition(".")
    listed = _TIMM.get(module) or _HF_SHARED.get(module)
    if listed is not None:
        return _lookup(module, attr) if attr in listed else None
    if _hf_module_allowed(module):
        obj = _lookup(module, attr)
        # any class the family's module defines itself, as long as it is a layer, model or config
        if isinstance(obj, type) and obj.__module__ == module and _hf_class_allowed(obj):
            return obj
    return None


def _lookup(module: str, attr: str):
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    return obj if isinstance(obj, type) or callable(obj) else None


def may_be_called(obj) -> bool:
    """Whether a pickle may call `obj` with arguments it chooses: only an Enum lookup by value."""
    return isinstance(obj, type) and issubclass(obj, enum.Enum)
