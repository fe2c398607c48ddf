"""acmtool eval CKPT --data DATA: the task metric, the achieved budget, the FLOPs ratio."""
from __future__ import annotations

import json

import click

from acmtool.cli.main import cli


def render_eval(r: dict, where: str) -> str:
    lines = [f"On the {where}:"]
    if r.get("task") == "classification":
        if "teacher_accuracy" in r:
            lines.append(f"  accuracy: original {100 * r['teacher_accuracy']:.2f} %, ACM {100 * r['student_accuracy']:.2f} %")
        lines.append(f"  top-1 agreement with the original: {100 * r['top1_agreement']:.2f} %")
    else:
        lines.append(f"  cosine similarity to the original's embeddings: mean {r['mean_cosine']:.4f}, "
                     f"min {r['min_cosine']:.4f}")
        if "teacher_probe_accuracy" in r:
            lines.append(f"  frozen-probe accuracy: original {100 * r['teacher_probe_accuracy']:.2f} %, "
                         f"ACM {100 * r['student_probe_accuracy']:.2f} %")
    lines.append(f"  achieved budget {r['achieved_budget']:.4f}")
    if r.get("flops"):
        lines.append(f"  whole-model FLOPs {r['flops']['ratio']:.3f} x the original (gates included)")
    return "\n".join(lines)


@cli.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", required=True, help="An image folder, .npz, .txt, fashion-mnist or fortunes.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write JSON here.")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="The validation split (as convert made it) or the dataset's test set, where it has one.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-samples", type=click.IntRange(min=2), default=None)
@click.option("--device", default="cpu", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing --json file.")
def eval_cmd(checkpoint, data, json_path, split, batch_size, max_samples, device, force):
    """Evaluate CHECKPOINT against its original model on DATA: accuracy for classifiers; cosine
    similarity and a frozen logistic-regression probe for embedding models; always the achieved
    budget and the whole-model FLOPs ratio."""
    from acmtool.train.evaluate_checkpoint import evaluate_checkpoint
    from acmtool.io.atomic import atomic_path
    from acmtool.io.outputs import refuse_existing
    if json_path:
        refuse_existing([json_path], force)
    report = evaluate_checkpoint(checkpoint, data, split=split, batch_size=batch_size, max_samples=max_samples,
                                 device=device)
    click.echo(render_eval(report, f"{split} split of {data}"))
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
