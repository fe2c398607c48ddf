"""acmtool verify: ONNX Runtime against the PyTorch reference on the same inputs.

The reference replays the k that ONNX Runtime's gates chose (read from the graph), so that the
output difference measures the kernels and not a gate flipping on a near tie; the agreement of
the gates' own choices and of top-1 is reported beside it. A static model has no gate to read: its
export is the narrower dense model, compared as it runs.

The tolerance scales with the output: float32 rounding grows with the values summed, so an
output whose largest magnitude is S may differ by tolerance x max(1, S). Whisper tiny.en's
encoder states reach the tens and differ by 2.45e-4 between two correct float32 paths. Where a
batch differs by more, the reference in float64 decides whether ONNX Runtime is wrong or the input
amplifies float32 rounding (acmtool.export.float64_check).
"""
from __future__ import annotations

import ast
import contextlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from acmtool.errors import AcmInputError
from acmtool.export.dense_fallback import densified, exported_dense_blocks
from acmtool.export.float64_check import Float64Reference, errors_against, rounding_verdict
from acmtool.export.schema import DOMAIN, OP_TYPE
from acmtool.export.static import static_acms
from acmtool.layers.acm import acm_modules
from acmtool.layers.control import at_budget


def _scope(node) -> Optional[str]:
    """The module a node came from, as the exporter records it (the wrapper's 'model.' dropped)."""
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            scopes = ast.literal_eval(p.value)
            # the export's wrappers: MainOutput's 'model.', and BudgetInput's 'wrapped.' around it
            return scopes[-2].removeprefix("wrapped.").removeprefix("model.") if len(scopes) >= 2 else None
    return None


def k_tensors(model, acm_names: list) -> dict:
    """{ACM name: (ONNX value, add min_k?)}: K as DynamicLearners consumes it (custom-op format),
    or the gate's ArgMax (standard format), to which min_k is added."""
    names = set(acm_names)
    ops = {}
    for node in model.graph.node:
        scope = _scope(node)
        if scope in names and node.domain == DOMAIN and node.op_type == OP_TYPE:
            ops[scope] = (node.input[1], False)
    argmax = {}
    for node in model.graph.node:
        scope = _scope(node)
        if scope in names and node.op_type == "ArgMax":
            argmax.setdefault(scope, (node.output[0], True))
    return ops or argmax


@contextlib.contextmanager
def replay(model, ks: dict):
    acms = dict(acm_modules(model))
    try:
        for name, k in ks.items():
            acms[name].replay_k = k
        yield
    finally:
        for m in acms.values():
            m.replay_k = None


def _numpy_inputs(inputs, session) -> dict:
    names = [i.name for i in session.get_inputs()]
    if isinstance(inputs, dict):
        feeds = {k: v.numpy() for k, v in inputs.items() if k in names}
        # a model exported with token_type_ids: the batches leave them out, and BERT-style models
        # read that as zeros, so ONNX Runtime gets the zeros the PyTorch reference uses
        if "token_type_ids" in names and "token_type_ids" not in feeds and "input_ids" in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return feeds
    return {names[0]: inputs.numpy()}


@contextlib.contextmanager
def _probe_path(proto, onnx_path: Path):
    """Where to save the model with K as outputs: a temporary folder, or, when its weights are
    external data (models over 2 GB), a hidden file beside the original, so that the data file's
    relative location still resolves (ONNX Runtime refuses links out of the model's folder)."""
    if any(t.external_data for t in proto.graph.initializer):
        fd, tmp = tempfile.mkstemp(prefix=f".{onnx_path.name}.", suffix=".verify.onnx", dir=onnx_path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
        finally:
            os.unlink(tmp)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp) / "with_k.onnx"


def verify(onnx_path, model, batches: list, tolerance: float = 1e-4, providers=None) -> dict:
    import onnx
    proto = onnx.load(str(onnx_path), load_external_data=False)  # a model over 2 GB stays in two files
    dense = list(exported_dense_blocks(proto))  # the proto already loaded: one read
    unknown = [n for n in dense if n not in dict(acm_modules(model))]
    if unknown:
        raise AcmInputError(f"{onnx_path} has dense blocks for ACMs that this checkpoint does not have "
                            f"({', '.join(unknown[:3])}): it was exported from another model")
    with densified(model, dense):  # the reference computes them as exported: every learner
        report = _verify(onnx_path, proto, model, batches, tolerance, providers)
    return report | {"dense_fallback": len(dense)}


def _verify(onnx_path, proto, model, batches: list, tolerance: float, providers) -> dict:
    import onnx
    from acmtool.runtime.session import session
    from acmtool.export.onnx_export import MainOutput
    acms = dict(acm_modules(model))
    ks = k_tensors(proto, list(acms))
    for name, (value, _) in ks.items():
        proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(value))
    with _probe_path(proto, Path(onnx_path)) as probe:
        onnx.save(proto, str(probe))
        sess = session(probe, providers=providers)
        wrapped = MainOutput(model).eval()
        max_diff, scale, k_same, k_total, top1_same, top1_total = 0.0, 0.0, 0, 0, 0, 0
        budgets = knob_budgets(sess, model)
        exact, arbitrated = Float64Reference(model), []  # (batch's max difference, its errors against float64)
        for inputs, budget in ((i, b) for i in batches for b in budgets):
            feeds = _numpy_inputs(inputs, sess)
            if budget is not None:  # None: the input left out, so the model's default (the trained budget)
                feeds["budget"] = np.array(budget, dtype=np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a low budget's accuracy warning is not verify's business
                with at_budget(model, budget):
                    outs = sess.run(None, feeds)
                    y_ort, k_ort, free, own_k, ref = _compare_once(outs, ks, acms, model, wrapped, inputs)
            ref_np = (ref if ks else free).numpy()
            diff = float(np.abs(y_ort - ref_np).max()) if y_ort.size else 0.0
            max_diff = max(max_diff, diff)
            scale = max(scale, float(np.abs(ref_np).max()) if ref_np.size else 0.0)
            if diff > allowed_diff(tolerance, scale):  # the scale only grows: every batch over the final bound
                ref64 = exact(inputs, budget, {n: torch.from_numpy(np.asarray(k)).long() for n, k in k_ort.items()})
                arbitrated.append((diff, errors_against(y_ort, ref_np, ref64)))
            for n, k in k_ort.items():
                if n in own_k:
                    k_same += int((own_k[n].numpy() == k).sum())
                    k_total += k.size
            if y_ort.ndim == 2:  # logits
                top1_same += int((y_ort.argmax(-1) == free.numpy().argmax(-1)).sum())
                top1_total += y_ort.shape[0]
    allowed = allowed_diff(tolerance, scale)
    over = [e for d, e in arbitrated if d > allowed]
    float64 = rounding_verdict(over, [e for _, e in arbitrated], allowed) if over else None
    return {"max_abs_diff": max_diff, "tolerance": tolerance, "output_scale": scale, "allowed": allowed,
            "passed": max_diff <= allowed or float64["passed"], "float64": float64, "budgets": budgets,
            "k_found": len(ks), "acms": len(acms), "k_agreement": k_same / k_total if k_total else None,
            "top1_agreement": top1_same / top1_total if top1_total else None, "batches": len(batches),
            "provider": sess.get_providers()[0], "static": bool(static_acms(model)) and not ks}


def allowed_diff(tolerance: float, scale: float) -> float:
    """The largest |ORT - PyTorch| accepted for outputs whose largest magnitude is `scale`."""
    return tolerance * max(1.0, scale)


def knob_budgets(sess, model) -> list:
    """The budgets to check: [None] (the model as exported), and, for a model with a `budget` input,
    its default (None), the lowest and the highest budget of its range and a point in between."""
    if "budget" not in {i.name for i in sess.get_overridable_initializers()}:
        return [None]
    budgets = ((getattr(model, "acmtool_info", {}) or {}).get("budget_table") or {}).get("budgets") or []
    if not budgets:
        raise AcmInputError("the ONNX model has a budget input but the checkpoint has no budget table: they "
                            "come from different conversions")
    return [None, budgets[0], budgets[len(budgets) // 4], budgets[-1]]


def _compare_once(outs, ks: dict, acms: dict, model, wrapped, inputs):
    """(ORT output, ORT's K per ACM, the reference's own output and K, the reference replaying ORT's K)."""
    from acmtool.export.onnx_export import use_impl
    y_ort, k_ort = outs[0], dict(zip(ks, outs[1:]))
    for name, (_, add_min_k) in ks.items():
        if add_min_k:
            k_ort[name] = k_ort[name] + acms[name].min_k
    with torch.no_grad(), use_impl(model, "naive"):  # the reference is the specification
        free = wrapped(**inputs) if isinstance(inputs, dict) else wrapped(inputs)
        own_k = {n: m.last_k.clone() for n, m in acms.items() if m.last_k is not None}
        with replay(model, {n: torch.from_numpy(np.asarray(k)).long() for n, k in k_ort.items()}):
            ref = wrapped(**inputs) if isinstance(inputs, dict) else wrapped(inputs)
    return y_ort, k_ort, free, own_k, ref


def verify_line(report: dict) -> str:
    """The line `acmtool verify` prints."""
    k = f"{100 * report['k_agreement']:.3f} %" if report["k_agreement"] is not None else "n/a"
    gates = f"K agreement {k} over {report['k_found']}/{report['acms']} ACMs"
    if report.get("static") and report.get("dense_fallback") == report["acms"]:
        gates = f"every ACM exported as its dense block ({report['acms']} ACMs, checked at k = N), no gate to compare"
    elif report.get("static"):
        gates = f"static model: every ACM runs a fixed k ({report['acms']} ACMs), no gate to compare"
    elif report.get("dense_fallback"):
        gates += f" ({report['dense_fallback']} exported as dense blocks, checked at k = N)"
    if len(report.get("budgets") or []) > 1:
        shown = ", ".join("default" if b is None else f"{b:g}" for b in report["budgets"])
        gates += f"; budget input checked at {shown}"
    top1 = f"{100 * report['top1_agreement']:.2f} %" if report["top1_agreement"] is not None else "n/a"
    scale = report["output_scale"]
    bound = f"allowed {report['allowed']:.3g}" + (f": tolerance {report['tolerance']:g} x output scale {scale:.3g}"
                                                  if scale > 1 else "")
    f64 = report.get("float64")
    if f64:  # beyond the tolerance: float64 arbitrated
        bound += (f"; beyond it on {f64['batches']} batch(es), where against float64 ORT is off by {f64['ort']:.3g} "
                  f"and the float32 reference by {f64['reference']:.3g}: "
                  + ("float32 rounding, passed" if f64["passed"] else "ORT is the one off, failed"))
    return (f"{report['provider']}: max |ORT - PyTorch| = {report['max_abs_diff']:.3g} "
            f"({bound}); {gates}; "
            f"top-1 agreement {top1}")
