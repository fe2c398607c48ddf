"""Running exported models: the custom-op library and ONNX Runtime sessions that use it.

Importing this needs neither torch, onnx, onnxruntime nor the built library; using them says how to get them.
"""
from acmtool.runtime.budget_controller import BudgetController
from acmtool.runtime.library import library_info, library_path
from acmtool.runtime.session import session, session_options

__all__ = ["BudgetController", "library_info", "library_path", "session", "session_options"]
