"""Export an ACM model to ONNX: `custom-op` (one ai.acmtool::DynamicLearners node per ACM, the gate
in stock ops) or `standard` (the same computation with stock ops only, for any runtime). A static
model (fixed k) exports as plain dense ONNX in either format (acmtool.export.static)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from acmtool.errors import AcmInputError
from acmtool.export.schema import DOMAIN, OP_TYPE, VERSION, register_schema
from acmtool.export.dense_fallback import DENSE_ABOVE, dense_choice, densified, mean_k_of_checkpoint
from acmtool.export.static import sliced, static_acms
from acmtool.io.atomic import atomic_files
from acmtool.io.outputs import onnx_outputs, onnx_path, refuse_existing
from acmtool.layers.acm import acm_modules
from acmtool.layers.control import knob_state, restore_knob

FORMATS = ("custom-op", "standard")
OPSET = 18
# weights beside the model (NAME.acm.onnx.data) above this: protobuf stops at 2 GB, and torch's own
# threshold (1.5 GiB) must not decide first
EXTERNAL_DATA_BYTES = 1_500_000_000


class MainOutput(nn.Module):
    """The model with one tensor out: logits, or the last hidden states of a model without a head
    (all_outputs: the tuple of tensors the model returns, as it is). `names` turns positional inputs
    into the keyword arguments Hugging Face models take (export with keyword-only inputs trips
    torch.export's guard code)."""

    def __init__(self, model: nn.Module, names: Optional[list] = None, all_outputs: bool = False):
        super().__init__()
        self.model = model
        self.names = names
        self.all_outputs = all_outputs

    def forward(self, *args, **kwargs):
        if self.names:
            kwargs = {**dict(zip(self.names, args)), **kwargs}
            args = ()
        out = self.model(*args, **kwargs)
        if isinstance(out, torch.Tensor) or self.all_outputs:
            return out
        for name in ("logits", "last_hidden_state"):
            value = getattr(out, name, None)
            if value is not None:
                return value
        return out[0]


class BudgetInput(nn.Module):
    """The model with the run-time budget as its last input (a float32 scalar): every gate's logits
    shift by the amount the budget table gives (acmtool.layers.budget_knob), computed in the graph."""

    def __init__(self, wrapped: nn.Module, table: dict, trained: float):
        super().__init__()
        self.wrapped, self.table, self.trained = wrapped, table, trained
        self.acms = [m for _, m in acm_modules(wrapped)]

    def forward(self, *args):
        from acmtool.layers.budget_knob import shift_at
        from acmtool.layers.control import set_knob
        budget = args[-1].to(torch.float32).reshape(())
        set_knob(self.acms, shift_at(self.table, budget), budget - self.trained)  # the delta only reaches
        return self.wrapped(*args[:-1])  # budget-conditioned gates (the others ignore it)


def budget_knob_of(model: nn.Module, static: dict, dense: dict) -> Optional[dict]:
    """The budget table to export as the `budget` input: a converted ACM model with a gate left."""
    info = getattr(model, "acmtool_info", {}) or {}
    gated = [n for n, _ in acm_modules(model) if n not in static and n not in dense]
    if not gated or info.get("static") or not info.get("budget_table") or info.get("budget") is None:
        return None
    return info["budget_table"]


def _default_budget(ir_model, budget: float) -> None:
    """The `budget` input gets the trained budget as its default: an initializer of the same name,
    which ONNX Runtime uses when the input is not fed."""
    import numpy as np
    import onnx_ir as ir
    value = next(v for v in ir_model.graph.inputs if v.name == "budget")
    value.const_value = ir.tensor(np.array(budget, dtype=np.float32), name="budget")
    ir_model.graph.register_initializer(value)


def _translation():
    import onnxscript
    from acmtool.ops.torch_op import dynamic_learners_op
    register_schema()
    acm = onnxscript.values.Opset(DOMAIN, VERSION)

    def dynamic_learners_onnx(x, k, w1, b1, w2, b2, activation: str):
        return getattr(acm, OP_TYPE)(x, k, w1, b1, w2, b2, activation=activation)
    return {dynamic_learners_op._opoverload: dynamic_learners_onnx}


@contextlib.contextmanager
def use_impl(model: nn.Module, impl: str):
    acms = [m for _, m in acm_modules(model)]
    saved = [m.impl for m in acms]
    for m in acms:
        m.impl = impl
    try:
        yield
    finally:
        for m, s in zip(acms, saved):
            m.impl = s


def dynamic_shapes_for(inputs) -> object:
    """Batch always dynamic; token/sequence axes dynamic for 2-D integer and audio inputs."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    seq = torch.export.Dim("seq", min=1, max=65536)

    def axes(t: torch.Tensor):
        if t.dim() == 2:  # input_ids, attention_mask, raw audio: [batch, length]
            return {0: batch, 1: seq}
        return {0: batch}
    if isinstance(inputs, dict):
        return {"args": tuple(axes(v) for v in inputs.values())}
    return {"args": (axes(inputs),)}


def _initializer_bytes(ir_model) -> int:
    return sum(v.const_value.nbytes for v in ir_model.graph.initializers.values() if v.const_value is not None)


def _metadata(model: nn.Module, fmt: str, static: dict, dense: dict) -> dict:
    """What `acmtool inspect` and `acmtool verify` read back from the ONNX file: the ACMs and how
    they were exported ("k": a fixed k, no gate; "dense_fallback": exported as the dense block,
    with the expected cost that chose it)."""
    from acmtool.cost import acm_rows
    acms = []
    for r in acm_rows(model):
        name = r["module"]
        a = {k: r[k] for k in ("module", "kind", "num_learners", "learner_width", "in_features", "out_features",
                               "min_k", "activation")}
        if name in static:
            a["k"] = static[name]
        if name in dense:
            a["k"] = r["num_learners"]
            a["dense_fallback"] = {"expected_cost": round(float(dense[name]), 4)}
        acms.append(a)
    static_model = bool(static) and not dense  # a --static checkpoint: no ACM keeps a gate
    from acmtool._version import __version__
    return {"acmtool.format": fmt, "acmtool.static": json.dumps(static_model), "acmtool.acms": json.dumps(acms),
            "acmtool.version": __version__}


def export_onnx(model: nn.Module, path, example_inputs, fmt: str = "custom-op", force: bool = False,
                dense: Optional[dict] = None, axes: Optional[dict] = None,
                output_names: Optional[list] = None, metadata: Optional[dict] = None) -> Path:
    """Write `path` (and, for a model over EXTERNAL_DATA_BYTES, `path`.data beside it) atomically;
    returns it. Refuses to replace an existing file unless force. The graph passes onnx.checker.

    The graph's outputs: the model's main output ("output"), or, with `output_names`, the tensors of
    a model that returns a tuple of them (in that order). Dynamic axes: the batch and a 2-D input's
    second axis (dynamic_shapes_for), or `axes` ({input name: {axis: torch.export.Dim}}).

    ACMs that run a fixed k (a static checkpoint) export as the dense MLPs they are, with their first
    k learners' weights: plain ONNX in both formats, no gate, no custom op. `dense` ({ACM name:
    expected cost}, acmtool.export.dense_fallback) names ACMs to export as their dense block (k = N).
    `metadata`: more metadata_props (a CTC model's vocabulary, acmtool.export.ctc_meta)."""
    import onnx
    if fmt not in FORMATS:
        raise AcmInputError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    path = Path(path)
    refuse_existing(onnx_outputs(path), force)
    if example_inputs is None:
        raise AcmInputError("no example input is known for this model, so it cannot be traced for export")
    model = model.eval()
    dense = dict(dense or {})
    static = static_acms(model)
    names = list(example_inputs) if isinstance(example_inputs, dict) else None
    wrapped = MainOutput(model, names, all_outputs=output_names is not None).eval()
    args = tuple(example_inputs.values()) if names else (example_inputs,)
    input_names = names or ["input"]
    shapes = {"args": tuple(axes.get(n) for n in input_names)} if axes else dynamic_shapes_for(example_inputs)
    table = budget_knob_of(model, static, dense)
    traced = wrapped
    if table is not None:  # the run-time budget: one more input, a scalar
        traced = BudgetInput(wrapped, table, float(model.acmtool_info["budget"])).eval()
        args += (torch.tensor(float(model.acmtool_info["budget"])),)
        input_names, shapes = input_names + ["budget"], {"args": shapes["args"] + (None,)}
    acms = [m for _, m in acm_modules(model)]
    saved = knob_state(acms)
    try:
        with densified(model, list(dense)), use_impl(model, "grouped" if fmt == "custom-op" else "masked"), \
                sliced(wrapped), torch.no_grad():
            program = torch.onnx.export(
                traced, args, dynamo=True, opset_version=OPSET, input_names=input_names,
                custom_translation_table=_translation() if fmt == "custom-op" else None,
                dynamic_shapes=shapes, optimize=True, verbose=False)
    finally:
        restore_knob(acms, saved)
    outputs = program.model.graph.outputs
    if output_names is not None and len(output_names) != len(outputs):
        raise RuntimeError(f"{path.name}: the traced graph has {len(outputs)} outputs, not {len(output_names)}")
    for value, name in zip(outputs, output_names or ["output"]):
        value.name = name  # onnx_ir: every node that reads the value reads it under the new name
    meta = {**_metadata(model, fmt, static, dense), **(metadata or {})}
    if table is not None:
        _default_budget(program.model, float(model.acmtool_info["budget"]))
        meta["acmtool.budget"] = json.dumps({"trained": float(model.acmtool_info["budget"]),
                                             "range": [table["budgets"][0], table["budgets"][-1]],
                                             "trained_range": model.acmtool_info.get("budget_range")})
    program.model.metadata_props.update(meta)
    big = _initializer_bytes(program.model) > EXTERNAL_DATA_BYTES
    with atomic_files(path) as folder:  # the data file is named after the final path, and moves with it
        tmp = folder / path.name
        program.save(str(tmp), external_data=big)
        onnx.checker.check_model(str(tmp), full_check=True)
    return path


def export_model(model, path=None, example_inputs=None, format: str = "custom-op", force: bool = False,
                 dense_above: Optional[float] = DENSE_ABOVE) -> Path:
    """`acmtool.export(...)`: an ACM model (an nn.Module, or the path of its checkpoint) to ONNX.

    A module needs `path`; its example inputs default to one of the model's own kind (timm and
    Hugging Face models; batch 2) and an AcmInputError says when they must be given. ACMs whose
    mean k on the conversion's held-out data (the report of a converted model) reaches
    dense_above export as their dense block."""
    if not isinstance(model, nn.Module):
        return export_checkpoint(model, path, format, force=force, dense_above=dense_above)
    if path is None:
        raise AcmInputError("acmtool.export(model, path): give the .onnx path to write")
    info = getattr(model, "acmtool_info", {}) or {}
    inputs = example_inputs if example_inputs is not None else _example_batch(model, info.get("source") or {})
    dense = dense_choice(model, mean_k_of_checkpoint(info), dense_above)
    from acmtool.export.ctc_meta import ctc_metadata
    return export_onnx(model, path, inputs, format, force=force, dense=dense,
                       metadata=ctc_metadata(model, info.get("source") or {}))


def _example_batch(model: nn.Module, source: dict):
    """An example input of batch 2 for the trace (torch.export would keep a batch of 1 static)."""
    from acmtool.io.sources import example_inputs
    inputs = example_inputs(model, source)
    if isinstance(inputs, torch.Tensor) and inputs.shape[0] == 1:
        return inputs.repeat(2, *([1] * (inputs.dim() - 1)))
    if isinstance(inputs, dict):
        return {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in inputs.items()}
    return inputs


def export_checkpoint(checkpoint, path=None, fmt: str = "custom-op", force: bool = False,
                      dense_above: Optional[float] = DENSE_ABOVE) -> Path:
    """Export an ACM checkpoint; `path` defaults to NAME.acm.onnx beside it (a Whisper: the folder
    NAME.acm.whisper of its encoder and decoder graphs, acmtool.export.seq2seq). An existing output is
    refused (unless force) before the checkpoint is loaded. ACMs whose expected cost on the
    conversion's held-out data reaches dense_above export as their dense block (None: none do)."""
    from acmtool.export.seq2seq import export_whisper, refuse_folder, whisper_folder
    from acmtool.io.checkpoint import load, read_info
    config = read_info(checkpoint)["source"].get("config") or {}
    whisper = config.get("model_type") == "whisper"  # a folder of graphs (acmtool.export.seq2seq)
    path = Path(path) if path is not None else whisper_folder(checkpoint) if whisper else onnx_path(checkpoint)
    if whisper:
        refuse_folder(path, force)
    else:
        refuse_existing(onnx_outputs(path), force)
    model = load(checkpoint)
    dense = dense_choice(model, mean_k_of_checkpoint(model.acmtool_info), dense_above)
    if whisper:
        return export_whisper(model, path, model.acmtool_info["source"], fmt, force=force, dense=dense)
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        # one graph cannot hold a decoder's token-by-token loop
        raise AcmInputError(f"{checkpoint}: ONNX export of encoder-decoder models other than Whisper "
                            f"({type(model).__name__}) is not supported yet; the checkpoint runs in PyTorch "
                            f"(acmtool.load, acmtool eval)")
    from acmtool.export.ctc_meta import ctc_metadata
    source = model.acmtool_info["source"]
    inputs = _example_batch(model, source)
    return export_onnx(model, path, inputs, fmt, force=force, dense=dense, metadata=ctc_metadata(model, source))
