"""The demo's deployment steps, after the comparison in PyTorch: the ONNX models, `verify`, the
ACM model in ONNX Runtime with the custom op on the test set, its speed against the dense ONNX
model, and a per-token compute map of one test image. Each step is a small function of its own."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader

from acmtool.cli.format import table
from acmtool.export.verify import verify_line

SPEED_BATCHES = (8, 1)
SPEED_RUNS = {"warmup": 20, "iters": 200}  # per batch size and model; a run of this model takes about 1 ms
VERIFY = {"batches": 3, "batch_size": 16, "tolerance": 1e-4}
ORT_BATCH = 250


def acm_onnx(checkpoint: Path, log=print) -> Path:
    """The custom-op export of the checkpoint: the one convert wrote beside it, or a new one."""
    from acmtool.export import export_checkpoint
    from acmtool.io.outputs import onnx_path
    path = onnx_path(Path(checkpoint))
    if path.is_file() and path.stat().st_mtime >= Path(checkpoint).stat().st_mtime:
        log(f"ACM model in ONNX (custom-op format): {path}, written by convert")
        return path
    log(f"== acmtool export {checkpoint} -o {path} --format custom-op")
    return export_checkpoint(checkpoint, path, "custom-op", force=True)  # an older export of the demo's own


def export_dense(model: torch.nn.Module, spec: dict, path: Path, log=print, force: bool = False) -> Path:
    """The dense model through the same exporter (torch.onnx.export, dynamo=True, batch axis
    dynamic); it has no ACMs, so the graph is the plain model in stock ops."""
    from acmtool.export import export_onnx
    from acmtool.io.sources import example_inputs
    x = example_inputs(model, spec)
    x = x.repeat(2, *([1] * (x.dim() - 1)))  # batch 2: torch.export keeps a size-1 axis static
    path = export_onnx(model.eval(), path, x, "standard", force=force)
    log(f"dense model in ONNX: {path}")
    return path


def onnx_accuracy(sess, dataset, collate, batch_size: int = ORT_BATCH) -> dict:
    """Top-1 accuracy of an ONNX classifier (one image input) over a labelled dataset."""
    name = sess.get_inputs()[0].name
    correct = total = 0
    started = time.perf_counter()
    for x, y in DataLoader(dataset, batch_size=batch_size, collate_fn=collate):
        logits = sess.run(None, {name: x.numpy()})[0]
        correct += int((logits.argmax(-1) == y.numpy()).sum())
        total += len(y)
    seconds = time.perf_counter() - started
    return {"accuracy": correct / total if total else None, "images": total, "seconds": seconds}


def speed_rows(acm_path, dense_path, batches=SPEED_BATCHES, warmup: int = SPEED_RUNS["warmup"],
               iters: int = SPEED_RUNS["iters"], threads: Optional[int] = None) -> list:
    """acmtool bench ACM --baseline DENSE at each batch size: [{batch, dense_ms, acm_ms, speedup, ...}]."""
    from acmtool.runtime.bench import BenchConfig, bench
    rows = []
    for b in batches:
        r = bench(acm_path, BenchConfig(batch=b, warmup=warmup, iters=iters, threads=threads), baseline=dense_path)
        rows.append({"batch": b, "dense_p50_ms": r["baseline"]["p50_ms"], "acm_p50_ms": r["model"]["p50_ms"],
                     "acm_samples_per_s": r["model"]["samples_per_s"], "speedup": r["speedup"]})
    return rows


def speed_table(rows: list) -> str:
    return table(["batch", "dense ms (p50)", "ACM ms (p50)", "ACM images/s", "speed-up"],
                 [[str(r["batch"]), f"{r['dense_p50_ms']:.3f}", f"{r['acm_p50_ms']:.3f}",
                   f"{r['acm_samples_per_s']:.0f}", f"{r['speedup']:.2f}x"] for r in rows])


def compute_map_png(model, spec: dict, pixels: torch.Tensor, path: Path, title: str):
    """The per-token compute map of one preprocessed image (acmtool visualize), written to `path`."""
    from acmtool.data.preprocess import image_prep
    from acmtool.visualize import compute_map, draw
    cmap = compute_map(model, pixels, image_prep(model, spec))
    draw(cmap, path, "all", title=title)
    return cmap


def deploy(folder: Path, checkpoint: Path, weights: Path, pytorch_accuracy: Optional[float] = None,
           log=print) -> dict:
    """Everything after the PyTorch comparison; returns the numbers for demo.json."""
    from acmtool.data import load_data
    from acmtool.data.named import FASHION_MNIST_CLASSES
    from acmtool.demo.dense_vit import MODEL, MODEL_ARGS
    from acmtool.errors import AcmCheckFailed
    from acmtool.export.verify import verify
    from acmtool.io.checkpoint import load
    from acmtool.io.sources import load_model
    from acmtool.runtime import session
    started = time.time()
    log("\n== ONNX: the ACM model with the ai.acmtool::DynamicLearners op, and the dense model")
    acm_path = acm_onnx(checkpoint, log)
    dense = load_model(MODEL, weights=str(weights), model_kwargs=MODEL_ARGS)
    dense_path = export_dense(dense.model, dense.spec, folder / "fashion-vit-dense.onnx", log, force=True)

    model = load(checkpoint)
    spec = model.acmtool_info["source"]
    task = load_data("fashion-mnist", model, spec)
    loader = DataLoader(task.test, batch_size=VERIFY["batch_size"], collate_fn=task.collate)
    batches = [x for _, (x, _) in zip(range(VERIFY["batches"]), loader)]
    log(f"== acmtool verify {acm_path} {checkpoint} (first {VERIFY['batches']} batches of "
        f"{VERIFY['batch_size']} test images)")
    checked = verify(acm_path, model, batches, VERIFY["tolerance"])
    log(verify_line(checked))
    if not checked["passed"]:
        raise AcmCheckFailed(f"verify: ONNX Runtime and PyTorch differ by {checked['max_abs_diff']:.3g} "
                             f"(allowed {checked['allowed']:.3g})")
    log("verify: ok")

    sess = session(acm_path)
    run = onnx_accuracy(sess, task.test, task.collate)
    torch_says = f" (PyTorch: {100 * pytorch_accuracy:.2f} %)" if pytorch_accuracy is not None else ""
    log(f"ONNX Runtime with the custom op ({sess.get_providers()[0]}): accuracy {100 * run['accuracy']:.2f} % on "
        f"the {run['images']} test images{torch_says}, {run['images'] / run['seconds']:.0f} images/s")

    log(f"== acmtool bench {acm_path} --baseline {dense_path} --batch B ({SPEED_RUNS['iters']} interleaved rounds)")
    rows = speed_rows(acm_path, dense_path)
    log(speed_table(rows))
    log("speed-up: dense time / ACM time, median over rounds")

    map_path = folder / "compute-map.png"
    pixels, label = task.test[0]
    cmap = compute_map_png(model, spec, pixels, map_path,
                           f"Fashion-MNIST test image 0 ({FASHION_MNIST_CLASSES[label]}): learners per patch")
    log(f"== acmtool visualize: per-token compute map of test image 0 -> {map_path} "
        f"(mean {float(cmap.mean.mean()):.2f} learners per patch)")
    return {"acm_onnx": str(acm_path), "dense_onnx": str(dense_path), "verify": checked,
            "onnxruntime": run, "speed": rows, "compute_map": str(map_path), "wall_time_s": time.time() - started}
