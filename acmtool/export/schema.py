"""The ONNX schema of ai.acmtool::DynamicLearners v1, registered with onnx so that onnxscript can
emit the node and onnx.checker can check it."""
from __future__ import annotations

DOMAIN = "ai.acmtool"
OP_TYPE = "DynamicLearners"
VERSION = 1


def register_schema() -> None:
    from onnx import defs
    if defs.has(OP_TYPE, DOMAIN):
        return
    P = defs.OpSchema.FormalParameter
    optional = defs.OpSchema.FormalParameterOption.Optional
    defs.register_schema(defs.OpSchema(
        OP_TYPE, DOMAIN, VERSION,
        doc="Y[t] = B2 + sum_{i < K[t]} act(X[t] W1[i] + B1[i]) W2[i]",
        inputs=[P("X", "T", "tokens [..., Din]"), P("K", "tensor(int64)", "learners per token, X's shape[:-1]"),
                P("W1", "T", "[N, Din, h]"), P("B1", "T", "[N, h]", param_option=optional),
                P("W2", "T", "[N, h, Dout]"), P("B2", "T", "[Dout]", param_option=optional)],
        outputs=[P("Y", "T", "[..., Dout]")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "floats")],
        attributes=[defs.OpSchema.Attribute("activation", defs.OpSchema.AttrType.STRING,
                                            "gelu, gelu_tanh, relu, silu or identity")],
    ))
