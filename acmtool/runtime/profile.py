"""Where the time of a run goes: ONNX Runtime's own profiler, summed per node type and per role.

Roles, read from the exported graph's node metadata (torch.onnx records each node's module path
under `namespace`): 'learners' (the DynamicLearners nodes), 'gates' (every other node inside an
ACM module: the gate's MatMuls and activation, the ArgMax; and the budget input's shift),
'dense_blocks' (the nodes of ACMs exported as their dense block, the dense fallback named in the
model's acmtool.acms metadata), 'rest' (the model around them). A node that ONNX Runtime's
optimiser made (a fusion) has no metadata and counts as 'rest', unless it is a DynamicLearners node.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Optional

ROLES = ("learners", "gates", "dense_blocks", "rest")
ACM_MODULES = ("acmtool.layers.acm.", "acmtool.layers.gate.")
WRAPPERS = ("wrapped.", "model.")  # the export's wrappers (BudgetInput, MainOutput) in module paths


def _acm_path(space: str) -> Optional[str]:
    """The module path of the innermost ACM (or the dense block exported for one: SlicedMlp) that a
    node sits in ('blocks.0.mlp'), from its namespace ('wrapped.model.blocks.0.mlp:
    acmtool.layers.acm.AcmMlp/...'); None outside every ACM."""
    found = None
    for part in space.split("/"):
        path, _, cls = part.partition(": ")
        if cls.startswith("acmtool.layers.acm.") or cls == "acmtool.export.static.SlicedMlp":
            for prefix in WRAPPERS:
                path = path.removeprefix(prefix)
            found = path
    return found


def node_roles(model_path) -> dict:
    """{node name: role} for the graph's nodes (the main graph; ACMs never sit in subgraphs)."""
    import onnx
    proto = onnx.load(str(model_path), load_external_data=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        dense = {a["module"] for a in json.loads(meta.get("acmtool.acms", "[]")) if a.get("dense_fallback")}
    except (ValueError, TypeError, KeyError):
        dense = set()
    roles = {}
    for node in proto.graph.node:
        space = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        if node.op_type == "DynamicLearners":
            roles[node.name] = "learners"
        elif _acm_path(space) in dense:
            roles[node.name] = "dense_blocks"
        elif any(m in space for m in ACM_MODULES) or ("BudgetInput/" in space and "MainOutput" not in space):
            roles[node.name] = "gates"
        else:
            roles[node.name] = "rest"
    return roles


def profile(model_path, feeds: dict, runs: int = 20, threads: Optional[int] = None,
            provider: str = "CPUExecutionProvider", warmup: int = 3) -> dict:
    """Time per run of every node type and role, in microseconds, from `runs` runs on `feeds` (after
    `warmup` runs that the sums leave out, so that first-run allocations do not count):
    {"runs", "total_us", "by_type": {op: {"us", "share", "nodes"}}, "by_role": {role: {"us", "share"}}}.
    Node times are ORT's kernel times: what the nodes cost, without the session's own overhead."""
    from acmtool.runtime.session import import_onnxruntime, session
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        sess = session(model_path, providers=[provider], threads=threads, options=opts)
        for _ in range(warmup):
            sess.run(None, feeds)
        # ORT cannot pause its profiler: the warm-up runs are in the file too, and are dropped below
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    return summarise(events, node_roles(model_path), skip_runs=warmup)


def summarise(events: list, roles: dict, skip_runs: int = 0) -> dict:
    """ORT's profile events -> per-type and per-role microseconds per run (the first skip_runs
    model runs left out)."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    runs.sort(key=lambda e: e["ts"])
    kept = runs[skip_runs:]
    if not kept:
        raise ValueError("the profile holds no model run to summarise")
    start = kept[0]["ts"]
    by_type: dict = defaultdict(lambda: {"us": 0.0, "nodes": 0})
    by_role = {r: 0.0 for r in ROLES}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or e["ts"] < start:
            continue
        op = e.get("args", {}).get("op_name", "?")
        node = e["name"][: -len("_kernel_time")]
        by_type[op]["us"] += e["dur"]
        by_type[op]["nodes"] += 1
        by_role["learners" if op == "DynamicLearners" else roles.get(node, "rest")] += e["dur"]
    n = len(kept)
    total = sum(v["us"] for v in by_type.values()) / n
    share = (lambda us: us / total if total > 0 else 0.0)
    types = {op: {"us": v["us"] / n, "share": share(v["us"] / n), "nodes": v["nodes"] / n}
             for op, v in sorted(by_type.items(), key=lambda kv: -kv[1]["us"])}
    return {"runs": n, "total_us": total, "run_us": sum(e["dur"] for e in kept) / n, "by_type": types,
            "by_role": {r: {"us": us / n, "share": share(us / n)} for r, us in by_role.items()}}


def render(report: dict, top: int = 8) -> str:
    """A few lines: the roles, then the node types that take the most time."""
    from acmtool.cli.format import table
    roles = "  ".join(f"{r} {100 * v['share']:.0f} %" for r, v in report["by_role"].items())
    rows = [[op, f"{v['us'] / 1e3:.3f}", f"{100 * v['share']:.1f} %", f"{v['nodes']:g}"]
            for op, v in list(report["by_type"].items())[:top]]
    return (f"node time per run {report['total_us'] / 1e3:.3f} ms (whole run {report['run_us'] / 1e3:.3f} ms, "
            f"{report['runs']} runs): {roles}\n" + table(["node type", "ms/run", "share", "nodes/run"], rows))

