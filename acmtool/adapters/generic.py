"""The generic finder: Linear -> activation -> (Dropout ...) -> Linear runs inside nn.Sequential."""
from __future__ import annotations

import torch.nn as nn

from acmtool.adapters._registry import register_finder
from acmtool.adapters.activation_names import activation_name
from acmtool.adapters.sites import MlpSite


def find_sequential_mlps(module: nn.Module, path: str, claimed: set) -> list:
    if not isinstance(module, nn.Sequential):
        return []
    items = list(module.named_children())
    sites, i = [], 0
    while i < len(items):
        found = _match_at(items, i)
        if found is None or id(items[i][1]) in claimed:
            i += 1
            continue
        j, act = found
        names = [n for n, _ in items[i:j + 1]]
        prefix = f"{path}." if path else ""
        sites.append(MlpSite(path=prefix + names[0], fc1=items[i][1], fc2=items[j][1], activation=act,
                             adapter="generic-sequential", identity=[prefix + n for n in names[1:]]))
        i = j + 1
    return sites


def _match_at(items, i):
    """(index of fc2, activation name) when items[i:] starts with Linear, act, Dropout*, Linear."""
    if i + 2 >= len(items) or not isinstance(items[i][1], nn.Linear):
        return None
    act = activation_name(items[i + 1][1])
    if act is None or act == "identity":
        return None
    j = i + 2
    while j < len(items) and isinstance(items[j][1], nn.Dropout):
        j += 1
    if j < len(items) and isinstance(items[j][1], nn.Linear) and items[j][1].in_features == items[i][1].out_features:
        return j, act
    return None


register_finder("generic-sequential", find_sequential_mlps)
