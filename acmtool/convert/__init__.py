"""Conversion: find the sites, build the ACMs, initialise them from the original weights."""
from acmtool.convert.acmize import acm_info, acmize_

__all__ = ["acm_info", "acmize_"]
