"""Small checks for untrusted JSON: one function per shape, each failing with a path to the bad value.

Checkpoint metadata and run state come from files a user may have been sent; every value is
checked for its type and bounds before any code uses it, so a bad file is one clear message and
never a traceback or a huge allocation.
"""
from __future__ import annotations

import math
import re
from typing import Iterable, Optional


class BadValue(ValueError):
    """A value in untrusted JSON that does not fit; str() is 'where: what'."""


def obj(value, where: str, required: Iterable[str] = (), optional: Iterable[str] = ()) -> dict:
    """A JSON object whose keys are exactly the required ones plus any of the optional ones."""
    if not isinstance(value, dict):
        raise BadValue(f"{where}: expected an object, got {_kind(value)}")
    required, allowed = set(required), set(required) | set(optional)
    missing = sorted(required - set(value))
    if missing:
        raise BadValue(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(str(k) for k in set(value) - allowed)
    if unknown:
        raise BadValue(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])}")
    return value


def integer(value, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BadValue(f"{where}: expected an integer in [{lo}, {hi}], got {_shown(value)}")
    return value


def number(value, where: str, lo: float, hi: float) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
            or not lo <= value <= hi):
        raise BadValue(f"{where}: expected a number in [{lo}, {hi}], got {_shown(value)}")
    return float(value)


def boolean(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise BadValue(f"{where}: expected true or false, got {_shown(value)}")
    return value


def string(value, where: str, max_len: int = 1024, pattern: Optional[str] = None) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise BadValue(f"{where}: expected a string of at most {max_len} characters, got {_shown(value)}")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise BadValue(f"{where}: {_shown(value)} is not a valid value here")
    return value


def array(value, where: str, max_len: int) -> list:
    if not isinstance(value, list) or len(value) > max_len:
        raise BadValue(f"{where}: expected a list of at most {max_len} items, got {_shown(value)}")
    return value


def optional(check, value, where: str, *args, **kwargs):
    return None if value is None else check(value, where, *args, **kwargs)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _shown(value) -> str:
    if isinstance(value, (dict, list)):
        return f"{_kind(value)} of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
