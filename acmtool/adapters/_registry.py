"""Adapters, keyed by module class: where a block's MLP and attention projections live.

Built-in adapters are keyed by qualified class name, so that finding them never imports timm or
transformers; users register their own block types with `register_adapter`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch.nn as nn

from acmtool.adapters.activation_names import activation_name
from acmtool.adapters.sites import MlpSite, ProjSite
from acmtool.errors import AcmInputError


@dataclass(frozen=True)
class MlpLayout:
    """Paths, relative to the block, of its Linear -> act -> Linear.

    `replace` is where the ACM goes ('' = the block itself); `identity` paths become nn.Identity.
    `check(block)` may return a reason to leave this block alone (for example a norm inside).
    """

    fc1: str
    act: str
    fc2: str
    replace: str = ""
    identity: tuple = ()
    check: Optional[Callable[[nn.Module], Optional[str]]] = None


@dataclass(frozen=True)
class AttentionLayout:
    """Paths of the projections to convert; `fused` maps a path to its number of parts (qkv: 3)."""

    projections: tuple
    fused: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Adapter:
    name: str
    mlp: Optional[MlpLayout] = None
    attention: Optional[AttentionLayout] = None


_ADAPTERS: dict[str, Adapter] = {}
Finder = Callable[[nn.Module, str, set], list]
_FINDERS: list[tuple[str, Finder]] = []


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_adapter(module_type: Union[type, str], mlp: Optional[MlpLayout] = None,
                     attention: Optional[AttentionLayout] = None, name: Optional[str] = None) -> Adapter:
    """Teach acmize_ a block type: `module_type` is the class (or its qualified name)."""
    key = module_type if isinstance(module_type, str) else _qualname(module_type)
    if mlp is None and attention is None:
        raise ValueError("register_adapter needs an MlpLayout, an AttentionLayout or both")
    adapter = Adapter(name or key.rsplit(".", 1)[-1], mlp, attention)
    _ADAPTERS[key] = adapter
    return adapter


def register_finder(name: str, finder: Finder) -> None:
    """A finder(module, path, claimed) returns sites for modules no adapter claims (last resort)."""
    _FINDERS.append((name, finder))


def adapter_for(module: nn.Module) -> Optional[Adapter]:
    for cls in type(module).__mro__:
        a = _ADAPTERS.get(_qualname(cls))
        if a is not None:
            return a
    return None


def _join(base: str, rel: str) -> str:
    return ".".join(p for p in (base, rel) if p)


def _mlp_site(block: nn.Module, path: str, adapter: Adapter) -> Optional[MlpSite]:
    lay = adapter.mlp
    if lay.check is not None:
        reason = lay.check(block)
        if reason:
            warnings.warn(f"acmtool: leaving {path or 'the model'} dense: {reason}", stacklevel=3)
            return None
    fc1, fc2, act = (block.get_submodule(lay.fc1), block.get_submodule(lay.fc2), block.get_submodule(lay.act))
    if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)):
        raise AcmInputError(f"adapter {adapter.name}: {path}.{lay.fc1} and .{lay.fc2} must be nn.Linear")
    name = activation_name(act)
    if name is None:
        raise AcmInputError(f"{_join(path, lay.act)}: activation {type(act).__name__} is not supported "
                            f"(supported: GELU, GELU-tanh, ReLU, SiLU); register an adapter with another block "
                            f"or keep this block dense")
    return MlpSite(path=_join(path, lay.replace), fc1=fc1, fc2=fc2, activation=name, adapter=adapter.name,
                   identity=[_join(path, p) for p in lay.identity])


def find_sites(model: nn.Module, targets: str) -> list:
    """Every MlpSite (and ProjSite with targets 'mlp+attn') in module order."""
    _load_builtins()
    sites, claimed = [], set()
    for path, module in model.named_modules():
        adapter = adapter_for(module)
        if adapter is None:
            continue
        if adapter.mlp is not None:
            site = _mlp_site(module, path, adapter)
            if site is not None:
                sites.append(site)
                claimed.update({id(site.fc1), id(site.fc2)})
        if adapter.attention is not None and targets == "mlp+attn":
            lay = adapter.attention
            for rel in lay.projections:
                lin = module.get_submodule(rel)
                if not isinstance(lin, nn.Linear):
                    raise AcmInputError(f"adapter {adapter.name}: {_join(path, rel)} must be nn.Linear")
                sites.append(ProjSite(path=_join(path, rel), linear=lin, adapter=adapter.name,
                                      parts=lay.fused.get(rel, 1)))
                claimed.add(id(lin))
    for name, finder in _FINDERS:
        for path, module in model.named_modules():
            for site in finder(module, path, claimed):
                sites.append(site)
                claimed.update({id(site.fc1), id(site.fc2)})
    return sites


_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        from acmtool.adapters import builtin, generic  # noqa: F401  (they register themselves)


def registered_class_names() -> list:
    """The qualified class names adapters are registered for (built-ins included)."""
    _load_builtins()
    return sorted(_ADAPTERS)
