"""ONNX export: the custom-op format (ai.acmtool::DynamicLearners) and the standard format.

The package is callable: `acmtool.export(model, "m.acm.onnx", example_inputs=x)` exports a model
built in Python, `acmtool.export("m.acm.safetensors")` a checkpoint (see export_model)."""
import sys
import types

from acmtool.export.onnx_export import FORMATS, export_checkpoint, export_model, export_onnx

__all__ = ["FORMATS", "export_checkpoint", "export_model", "export_onnx"]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return export_model(*args, **kwargs)

    __call__.__doc__ = export_model.__doc__


sys.modules[__name__].__class__ = _CallableModule
