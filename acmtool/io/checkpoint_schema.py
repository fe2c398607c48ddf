"""The schema of an ACM checkpoint's metadata (`info`): known keys, types and bounds.

Checked before anything is built from it. The tensors themselves are checked against the
safetensors header in `checkpoint.load`, on a model built on the meta device first.
"""
from __future__ import annotations

from acmtool.config import AcmConfig
from acmtool.errors import AcmInputError
from acmtool.io import json_checks as J
from acmtool.io.source_spec import check_spec

MAX_SITES = 4096
_MODULE_PATH = r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*"
_BIG = 1 << 62


def check_info(info) -> dict:
    """`info` unchanged if it fits the schema; J.BadValue naming the first value that does not."""
    J.obj(info, "info", required=("config", "sites", "source"),
          optional=("flops_profile", "budget", "static", "report", "budget_table", "budget_range"))
    try:
        AcmConfig.from_dict(info["config"])
    except AcmInputError as e:
        raise J.BadValue(f"info.config: {e}") from None
    paths = [_site(s, f"info.sites[{i}]") for i, s in enumerate(J.array(info["sites"], "info.sites", MAX_SITES))]
    if len(set(paths)) != len(paths):
        raise J.BadValue("info.sites: a module path is listed twice")
    check_spec(info["source"], "info.source")
    if info.get("flops_profile") is not None:
        _profile(info["flops_profile"], paths)
    J.optional(J.number, info.get("budget"), "info.budget", 1e-6, 1.0)
    J.optional(J.boolean, info.get("static"), "info.static")
    if info.get("static") and info.get("budget") is None:
        raise J.BadValue("info.static: a static checkpoint needs its budget")
    if info.get("report") is not None:
        _report(info["report"])
    if info.get("budget_table") is not None:
        _budget_table(info["budget_table"])
    if info.get("budget_range") is not None:
        _budget_range(info["budget_range"], info.get("budget"))
    return info


def _budget_range(value, budget) -> None:
    from acmtool.train.options import check_budget_range
    J.array(value, "info.budget_range", 2)
    try:
        check_budget_range(value, budget)
    except AcmInputError as e:
        raise J.BadValue(f"info.budget_range: {e}") from None


def _budget_table(table) -> None:
    from acmtool.layers.budget_knob import check_table
    J.obj(table, "info.budget_table", required=("budgets", "shifts"), optional=("conditioned",))
    for key in ("budgets", "shifts"):
        J.array(table[key], f"info.budget_table.{key}", 64)
    try:
        check_table(table)
    except ValueError as e:
        raise J.BadValue(f"info.budget_table: {e}") from None


def _site(site, where: str) -> str:
    J.obj(site, where, required=("path", "kind", "adapter"))
    J.string(site["path"], f"{where}.path", 512, _MODULE_PATH)
    if site["kind"] not in ("mlp", "proj"):
        raise J.BadValue(f"{where}.kind: expected mlp or proj, got {J._shown(site['kind'])}")
    J.string(site["adapter"], f"{where}.adapter", 128, r"[A-Za-z0-9_.+-]+")
    return site["path"]


def _profile(profile, paths: list) -> None:
    J.obj(profile, "info.flops_profile", required=("original", "rest", "site_tokens"))
    J.integer(profile["original"], "info.flops_profile.original", 0, _BIG)
    J.integer(profile["rest"], "info.flops_profile.rest", 0, _BIG)
    tokens = J.obj(profile["site_tokens"], "info.flops_profile.site_tokens", optional=paths)
    for path, n in tokens.items():
        J.integer(n, f"info.flops_profile.site_tokens.{path}", 0, _BIG)


def _report(report) -> None:
    """The training report is shown, not executed; only the parts code reads back are typed."""
    if not isinstance(report, dict):
        raise J.BadValue(f"info.report: expected an object, got {J._kind(report)}")
    options = report.get("options")
    if options is not None:
        J.obj(options, "info.report.options",
              optional=("seed", "val_fraction", "max_samples", "text_column", "label_column"))
        J.optional(J.integer, options.get("seed"), "info.report.options.seed", -(1 << 63), (1 << 64) - 1)
        J.optional(J.number, options.get("val_fraction"), "info.report.options.val_fraction", 0.0, 0.99)
        J.optional(J.integer, options.get("max_samples"), "info.report.options.max_samples", 2, _BIG)
        for key in ("text_column", "label_column"):  # column names of a table, read back by eval
            J.optional(J.string, options.get(key), f"info.report.options.{key}", 256)
