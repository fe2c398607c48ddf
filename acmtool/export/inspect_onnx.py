"""acmtool inspect model.onnx: what an exported ACM model holds, read from the file alone (the
metadata that export writes, and the DynamicLearners nodes themselves), without loading weights."""
from __future__ import annotations

import json
import re
from pathlib import Path

from acmtool.cli.format import flops, table
from acmtool.errors import AcmInputError
from acmtool.export.schema import DOMAIN, OP_TYPE


def _load(path: Path):
    import onnx
    if not path.is_file():
        raise AcmInputError(f"{path}: no such file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise AcmInputError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None


def onnx_summary(path) -> dict:
    path = Path(path)
    model = _load(path)
    meta = {p.key: p.value for p in model.metadata_props}
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    ops = []
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type == OP_TYPE:
            w1 = dims.get(node.input[2])
            act = next((a.s.decode() for a in node.attribute if a.name == "activation"), "?")
            ops.append({"node": node.name, "activation": act, "w1_shape": w1})
    params = sum(_numel(d) for d in dims.values())
    try:
        acms = json.loads(meta.get("acmtool.acms", "[]"))
    except json.JSONDecodeError:
        acms = []
    return {"file": str(path), "format": meta.get("acmtool.format"),
            "static": meta.get("acmtool.static") == "true", "acms": acms, "dynamic_learners_nodes": ops,
            "gates": sum(n.op_type == "ArgMax" for n in model.graph.node), "parameters": params,
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "inputs": [i.name for i in model.graph.input if i.name not in dims],
            "outputs": [o.name for o in model.graph.output]}


def compact_names(names: list) -> str:
    """Names that differ in one index (a cache graph's past_key_values.0.decoder.key ...
    past_key_values.31.decoder.key) as one: past_key_values.{0..31}.decoder.key."""
    groups: dict = {}
    for n in names:
        m = re.fullmatch(r"(.+?\.)(\d+)(\..+)", n)
        groups.setdefault((m[1], m[3]) if m else (n, None), []).append(int(m[2]) if m else None)
    out = []
    for (head, tail), idx in groups.items():
        if tail is None:
            out.append(head)
        else:
            out.append(f"{head}{{{min(idx)}..{max(idx)}}}{tail}" if len(idx) > 1 else f"{head}{idx[0]}{tail}")
    return ", ".join(out)


def _numel(shape: list) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def render_onnx(s: dict) -> str:
    if s["static"]:
        kind = "static ACM model: plain ONNX (no gate, no custom op; each ACM is a dense block of k learners)"
    elif s["format"]:
        kind = f"ACM model, {s['format']} format, {len(s['dynamic_learners_nodes'])} DynamicLearners nodes, " \
               f"{s['gates']} gates"
        dense = [a for a in s["acms"] if a.get("dense_fallback")]
        if dense:
            kind += (f"; {len(dense)} ACMs exported as dense blocks (their expected cost reached "
                     f"--dense-above: they could not beat the dense block)")
    else:
        kind = f"no acmtool metadata; {len(s['dynamic_learners_nodes'])} DynamicLearners nodes"
    lines = [f"{s['file']}: {kind}",
             f"inputs {compact_names(s['inputs'])}; opsets {s['opsets']}; {flops(s['parameters'])} parameters"]
    if len(s.get("outputs") or []) > 1:  # a Whisper cache graph: the logits and the keys and values
        lines.append(f"outputs {compact_names(s['outputs'])}")
    if s["acms"]:
        rows = []
        for a in s["acms"]:
            k = a.get("k")
            width = f"{k * a['learner_width']}" if k is not None else f"{a['num_learners']}x{a['learner_width']}"
            shown = "gate" if k is None else f"{k} (dense, cost {a['dense_fallback']['expected_cost']:.2f})" \
                if a.get("dense_fallback") else k
            rows.append([a["module"], a["kind"], a["num_learners"], a["learner_width"], shown,
                         width, f"{a['in_features']}->{a['out_features']}", a["activation"]])
        lines.append(table(["module", "kind", "N", "h", "k", "hidden", "in->out", "activation"], rows))
    return "\n".join(lines)
