"""ONNX export: the custom-op format (ai.acmtool::DynamicLearners) and the standard format."""
from acmtool.export.onnx_export import FORMATS, export_checkpoint, export_onnx

__all__ = ["FORMATS", "export_checkpoint", "export_onnx"]
