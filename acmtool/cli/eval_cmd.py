"""acmtool eval CKPT --data DATA [--baseline OTHER]: the task metric, each difference with its paired
standard error, the achieved budget, the FLOPs ratio."""
from __future__ import annotations

import json
from typing import Optional

import click

from acmtool.cli.main import cli
from acmtool.cli.options import text_column_options
from acmtool.errors import AcmInputError

FEW_SAMPLES = 1000  # below this, differences of a point or so are hard to tell from noise (DESIGN.md)

# vs_original / vs_baseline key -> how the line names it; accuracies are fractions, shown in points
DIFFERENCES = {"wer": "word error rate", "accuracy": "accuracy", "dropin_probe": "drop-in probe", "refit_probe": "refit probe",
               "cosine": "mean cosine"}


def model_name(r: dict) -> str:
    return "static" if r.get("static") else "ACM"


def render_difference(key: str, d: dict, a: str, b: str) -> str:
    """`drop-in probe: ACM - static +1.23 +- 0.40 points (n = 1600)`; cosine as it is."""
    if key == "cosine":
        se = "?" if d["se"] is None else f"{d['se']:.4f}"
        return f"{DIFFERENCES[key]}: {a} - {b} {d['diff']:+.4f} +- {se} (n = {d['n']})"
    se = "?" if d["se"] is None else f"{100 * d['se']:.2f}"  # None: one sample, no spread to measure
    line = f"{DIFFERENCES[key]}: {a} - {b} {100 * d['diff']:+.2f} +- {se} points (n = {d['n']})"
    if "fewer" in d:  # speech: utterance by utterance, which one loop of insertions cannot sway
        line += (f"; {a} makes fewer word errors on {d['fewer']} utterances, more on {d['more']} "
                 f"(sign test p = {d['sign_p']:.2g})")
    return line


def render_differences(diffs: dict, a: str, b: str, indent: str = "  ") -> list:
    return [indent + render_difference(k, diffs[k], a, b) for k in DIFFERENCES if k in diffs]


def few_samples_warning(n: Optional[int]) -> Optional[str]:
    if not n or n >= FEW_SAMPLES:
        return None
    return (f"warning: only {n} evaluation samples; differences of a point or two on so few are hard to tell from "
            f"noise (use {FEW_SAMPLES} or more)")


def render_eval(r: dict, where: str, name: Optional[str] = None, warn: bool = True) -> str:
    name = name or model_name(r)
    n = r.get("eval_samples")
    lines = [f"On the {where}" + (f" ({n} samples):" if n is not None else ":")]
    if n == 0:
        lines.append("  no samples to evaluate on")
    elif r.get("task") == "transcription":
        lines.append(f"  word error rate (greedy decoding, against the transcripts): original "
                     f"{100 * r['teacher_wer']:.2f} %, {name} {100 * r['student_wer']:.2f} %")
        on = f"the audio's {r['eval_tokens']} frames" if r.get("decoding") == "ctc" else \
            f"the transcripts' {r['eval_tokens']} tokens (teacher-forced)"
        lines.append(f"  top-1 agreement with the original on {on}: {100 * r['top1_agreement']:.2f} %")
    elif r.get("task") == "classification":
        if "teacher_accuracy" in r:
            lines.append(f"  accuracy: original {100 * r['teacher_accuracy']:.2f} %, {name} "
                         f"{100 * r['student_accuracy']:.2f} %")
        lines.append(f"  top-1 agreement with the original: {100 * r['top1_agreement']:.2f} %")
    else:
        lines.append(f"  cosine similarity to the original's embeddings: mean {r['mean_cosine']:.4f}, "
                     f"min {r['min_cosine']:.4f}")
        if "teacher_probe_accuracy" in r:
            lines.append(f"  drop-in probe accuracy (fitted on the original's features): original "
                         f"{100 * r['teacher_probe_accuracy']:.2f} %, {name} {100 * r['student_probe_accuracy']:.2f} %")
        if "refit_probe_accuracy" in r:
            lines.append(f"  refit probe accuracy (fitted on each model's own features): original "
                         f"{100 * r['teacher_refit_probe_accuracy']:.2f} %, "
                         f"{name} {100 * r['refit_probe_accuracy']:.2f} %")
    lines += render_differences(r.get("vs_original") or {}, name, "original")
    parts = r.get("part_budgets")
    lines.append(f"  achieved budget {r['achieved_budget']:.4f}" +
                 (f" (encoder {parts['encoder']:.4f}, decoder {parts['decoder']:.4f})" if parts else "") +
                 (f"; k = 0 (block skipped) for {100 * r['k0_share']:.1f} % of MLP tokens" if "k0_share" in r else ""))
    if r.get("flops"):
        lines.append(f"  whole-model FLOPs {r['flops']['ratio']:.3f} x the original (gates included)")
    warning = few_samples_warning(n) if warn else None
    if warning:
        lines.append(f"  {warning}")
    return "\n".join(lines)


def baseline_name(r: dict, base: dict) -> str:
    b = model_name(base)
    return "baseline" if b == model_name(r) else b


def render_with_baseline(r: dict, where: str) -> str:
    """Both models' figures, then this model - the baseline on the same samples."""
    a, base = model_name(r), r["baseline"]
    b = baseline_name(r, base)
    lines = [f"{a}: {r['checkpoint']}", render_eval(r, where, a, warn=False), "",
             f"{b}: {base['checkpoint']}", render_eval(base, where, b, warn=False), "",
             f"{a} - {b}, on the same samples:"]
    lines += render_differences(r.get("vs_baseline") or {}, a, b)
    warning = few_samples_warning(r.get("eval_samples"))
    if warning:
        lines.append(warning)
    return "\n".join(lines)


def parse_budgets(text: Optional[str]) -> Optional[list]:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AcmInputError(f"--budgets {text!r}: give numbers separated by commas, e.g. 0.25,0.5,0.75") from None
    bad = [v for v in values if not 0 < v <= 1]
    if not values or bad:
        raise AcmInputError(f"--budgets {text!r}: each budget must lie in (0, 1]")
    return values


def render_curve(report: dict) -> str:
    """One row per budget: the achieved budget, the FLOPs ratio and the task figures against the original."""
    from acmtool.cli.format import table
    rows = []
    for r in report["budget_curve"]:
        d = r.get("vs_original") or {}
        key = next((k for k in ("wer", "accuracy", "dropin_probe") if k in d), None)
        row = [f"{r['budget']:.2f}", f"{r['achieved_budget']:.3f}",
               f"{r['flops']['ratio']:.3f}" if r.get("flops") else "-"]
        if key:
            se = d[key]["se"]
            row.append(f"{100 * d[key]['diff']:+.2f} +- " + ("?" if se is None else f"{100 * se:.2f}"))
        if "mean_cosine" in r:
            row.append(f"{r['mean_cosine']:.4f}")
        rows.append(row)
    first = report["budget_curve"][0]
    key = next((k for k in ("wer", "accuracy", "dropin_probe") if k in (first.get("vs_original") or {})), None)
    head = ["budget", "achieved", "FLOPs x"] + ([f"{DIFFERENCES[key]} vs original (points)"] if key else []) + \
        (["mean cosine"] if "mean_cosine" in first else [])
    return table(head, rows)


@cli.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", default=None,
              help="An image folder, .npz, .txt, .csv/.tsv/.jsonl, fashion-mnist or fortunes (speech: audio with "
                   "transcripts, asterisk, pocketsphinx; scored by word error rate): its validation split (or test "
                   "set) is scored, and its training split fits the embedding models' probe.")
@click.option("--test-data", default=None,
              help="A separate labelled source to score, every sample of it (--data then only fits the probe).")
@text_column_options
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write JSON here.")
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="The validation split (as convert made it) or the dataset's test set, where it has one.")
@click.option("--baseline", type=click.Path(dir_okay=False), default=None,
              help="Another checkpoint of the same original model (e.g. the --static one): evaluated on the same "
                   "samples, with CHECKPOINT - baseline and its paired standard error.")
@click.option("--budget", type=float, default=None,
              help="Evaluate CHECKPOINT at this budget (the run-time budget knob), the --baseline comparison too.")
@click.option("--budgets", default=None, metavar="B1,B2,...",
              help="Also evaluate at these budgets (the run-time budget knob), on the same samples: one row each.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="With --budgets: also draw the task figure and the achieved budget against the budget (PNG).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-samples", type=click.IntRange(min=2), default=None)
@click.option("--device", default="cpu", show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing --json or --plot file.")
def eval_cmd(checkpoint, data, test_data, text_column, label_column, json_path, split, baseline, budget, budgets,
             plot_path, batch_size, max_samples, device, force):
    """Evaluate CHECKPOINT against its original model on DATA: accuracy for classifiers; cosine
    similarity, the drop-in probe (a logistic regression fitted on the original's features) and a
    refit probe (fitted on the model's own) for embedding models; the word error rate of greedy
    transcripts for speech-to-text models (paired over utterances); each difference with its paired
    standard error; always the achieved budget and the whole-model FLOPs ratio."""
    from acmtool.io.atomic import atomic_path
    from acmtool.io.outputs import refuse_existing
    from acmtool.train.evaluate_checkpoint import evaluate_checkpoint
    if plot_path and not budgets:
        raise AcmInputError("--plot draws the --budgets curve: give --budgets too")
    refuse_existing([p for p in (json_path, plot_path) if p], force)
    report = evaluate_checkpoint(checkpoint, data, split=split, batch_size=batch_size, max_samples=max_samples,
                                 device=device, baseline=baseline, test_data=test_data,
                                 columns={"text_column": text_column, "label_column": label_column},
                                 budgets=parse_budgets(budgets), budget=budget)
    where = f"all of {test_data}" if test_data else f"{split} split of {data}"
    click.echo(render_with_baseline(report, where) if baseline else render_eval(report, where))
    if report.get("budget_curve"):
        click.echo(f"\nAt other budgets (one model, the budget knob; the same samples):\n{render_curve(report)}")
    if plot_path:
        from acmtool.cli.curve_plot import plot_accuracy_curve
        click.echo(f"wrote {plot_accuracy_curve(report, plot_path)}")
    if json_path:
        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
