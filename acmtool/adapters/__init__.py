"""Adapters: where each architecture keeps its MLPs and attention projections."""
from acmtool.adapters._registry import (
    Adapter,
    AttentionLayout,
    MlpLayout,
    find_sites,
    register_adapter,
    register_finder,
)
from acmtool.adapters.sites import MlpSite, ProjSite

__all__ = ["Adapter", "AttentionLayout", "MlpLayout", "MlpSite", "ProjSite", "find_sites",
           "register_adapter", "register_finder"]
