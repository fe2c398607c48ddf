"""acmtool convert MODEL: replace the model's dense blocks with ACMs; with --data, train them to
the budget (distillation, gate pre-training, fine-tuning) and write the checkpoint and a report."""
from __future__ import annotations

from pathlib import Path

import click

from acmtool.cli.main import cli
from acmtool.cli.options import load_convert_config, model_source_options, parse_model_args, text_column_options
from acmtool.errors import AcmInputError
from acmtool.train.options import DISTILL_WEIGHTS, GATE_LABELS, parse_budget_range


def default_output(model: str) -> Path:
    name = model[5:] if model.startswith("timm:") else Path(model.rstrip("/")).name.split(".")[0]
    return Path(f"{name}.acm.safetensors")


@cli.command("convert")
@click.argument("model")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=load_convert_config,
              help="A JSON file of options (or a report: its convert_options) to start from; the command line wins.")
@model_source_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The ACM checkpoint to write (default: NAME.acm.safetensors); the report goes beside it.")
@click.option("--budget", type=float, default=None, help="Target fraction of learner compute, in (0, 1].")
@click.option("--budget-range", default=None, metavar="LO:HI",
              help="Train one model for every budget from LO to HI (the budget knob: acmtool.set_budget, the ONNX "
                   "model's budget input); --budget, its default budget, is then the middle of the range unless given.")
@click.option("--range-skew", type=float, default=1.0, show_default=True,
              help="With --budget-range: fine-tuning budgets LO + (HI - LO) * u**S for u spread evenly over [0, 1); "
                   "S > 1 puts more steps near LO, the budget furthest from the original (2: 37 % of the steps "
                   "within 0.1 of 0.25 on 0.25:1.0, against 13 %).")
@click.option("--data", default=None,
              help="Training data: an image folder, .npz, .txt, .csv/.tsv/.jsonl, fashion-mnist, fortunes; for speech "
                   "models a folder of audio with a transcript table (path, text), asterisk or pocketsphinx. Without "
                   "it, --budget distils on the built-in data for the model's inputs (fashion-mnist images or "
                   "fortunes text).")
@text_column_options
@click.option("--learners", "num_learners", type=click.IntRange(min=1), default=4, show_default=True,
              help="N, the learners per ACM.")
@click.option("--targets", type=click.Choice(["mlp", "mlp+attn"]), default="mlp", show_default=True,
              help="Convert MLPs only, or MLPs and attention projections.")
@click.option("--static", is_flag=True, help="The static baseline: no gate, every token runs round(B*N) learners.")
@click.option("--labels", is_flag=True, help="Add cross-entropy on the data's labels to the distillation loss.")
@click.option("--finetune-gates", is_flag=True,
              help="Train the gates in fine-tuning too (budget, entropy and diversity losses); by default they "
                   "keep what gate pre-training taught them.")
@click.option("--distill-epochs", type=float, default=1.0, show_default=True)
@click.option("--distill-weights", type=click.Choice(("auto",) + DISTILL_WEIGHTS), default="auto",
              show_default=True,
              help="How distillation weighs each prefix h(z, k): anchor (h(z, N) as much as all shorter ones), even, "
                   "usage (half by the share of tokens that --budget sends to each k); auto: anchor, even with "
                   "--static.")
@click.option("--gate-epochs", type=float, default=0.5, show_default=True)
@click.option("--finetune-epochs", type=float, default=1.0, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Cap on the steps of each phase.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--distill-lr", type=float, default=3e-4, show_default=True)
@click.option("--gate-lr", type=float, default=None,
              help="Gate pre-training learning rate. Default: 2e-2 with loss labels, 1e-3 with budget or tau labels.")
@click.option("--finetune-lr", type=float, default=1e-4, show_default=True)
@click.option("--tau", type=float, default=0.83, show_default=True, help="Threshold of the tau gate labels.")
@click.option("--gate-labels", type=click.Choice(list(GATE_LABELS)), default="auto", show_default=True,
              help="Gate pre-training labels. loss: the oracle allocation at the budget over every block, each "
                   "error weighed by what it costs the output; budget: the same per block, errors relative to "
                   "each token's output; tau: the paper's rule; auto: loss (classifiers and embedding models "
                   "alike).")
@click.option("--gate-probes", type=click.IntRange(min=1), default=8, show_default=True,
              help="Random probes of the output's Fisher information per batch for the loss labels, each one "
                   "backward pass: fewer make gate pre-training cheaper (on Whisper's 1500 encoder frames it "
                   "dominates a conversion) and the labels noisier.")
@click.option("--max-samples", type=click.IntRange(min=2), default=None, help="Use a seeded subset of the data.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True,
              help="auto (cuda when torch sees a GPU, else cpu), cpu or cuda.")
@click.option("--checkpoint-minutes", type=float, default=5.0, show_default=True,
              help="Save the run's state this often (and after each phase).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run with the same options.")
@click.option("--no-onnx", is_flag=True, help="Do not export the ONNX model (NAME.acm.onnx) beside the checkpoint.")
@click.option("--force", is_flag=True, help="Replace existing outputs (checkpoint, report, ONNX model); without it "
                                            "convert refuses before any work.")
def convert_cmd(model, output, budget, no_onnx, model_args, **options):
    """Convert MODEL (timm:NAME, a Hugging Face folder, a .pt/.pth or .safetensors file, or
    ct2:FOLDER, a CTranslate2 Whisper such as faster-whisper's) into an ACM checkpoint, and export
    it to NAME.acm.onnx beside it (a Whisper: the folder NAME.acm.whisper of its encoder and
    decoder graphs, for acmtool transcribe). With --budget the ACMs are trained to the
    budget, on --data or, without it, on the built-in data for the model's inputs; without --budget
    they are only initialised from the original weights. Existing outputs are never replaced without
    --force (or, for a run's own files, --resume)."""
    # every other option is a ConvertOptions field of the same name: the command line and
    # acmtool.convert build the one options object and run the one pipeline
    out = Path(output) if output else default_output(model)
    model_kwargs = parse_model_args(model_args)
    options["budget_range"] = parse_budget_range(options["budget_range"])
    if budget is None and options["budget_range"] is not None:
        budget = round(sum(options["budget_range"]) / 2, 6)
    if budget is None:
        given = next((flag for flag, on in (("--data", options["data"] is not None), ("--static", options["static"]),
                                            ("--resume", options["resume"])) if on), None)
        if given:
            raise AcmInputError(f"{given} needs --budget: the fraction of learner compute to keep, in (0, 1]")
        return _init_only(model, options, model_kwargs, out, not no_onnx)
    from acmtool.train.options import ConvertOptions
    from acmtool.train.pipeline import convert, report_path
    opts = ConvertOptions(model=model, budget=budget, output=str(out), model_args=model_kwargs, onnx=not no_onnx,
                          **options, **click.get_current_context().meta.get("convert_extra", {}))
    report = convert(opts)
    if report.get("validation"):
        from acmtool.cli.eval_cmd import render_eval
        click.echo(render_eval(report["validation"], "validation split"))
    if report.get("budget_curve"):
        from acmtool.cli.eval_cmd import render_curve
        click.echo("\nacross the trained range (the budget knob; the same samples):")
        click.echo(render_curve(report))
    if report.get("validation"):
        click.echo(f"wrote {out} and {report_path(out)}")


def _init_only(model, options, model_kwargs, out, onnx):
    """No budget: the ACMs initialised from the original weights, nothing trained."""
    from acmtool.config import AcmConfig
    from acmtool.convert.acmize import acmize_
    from acmtool.io.checkpoint import save
    from acmtool.io.outputs import onnx_outputs, onnx_path, refuse_existing
    from acmtool.io.sources import example_inputs, load_model
    from acmtool.report import render, summary
    refuse_existing([out] + (onnx_outputs(onnx_path(out)) if onnx else []), options["force"])
    config = AcmConfig(num_learners=options["num_learners"], targets=options["targets"])
    loaded = load_model(model, weights=options["weights"], arch=options["arch"], trust_pickle=options["trust_pickle"],
                        model_kwargs=model_kwargs)
    acmize_(loaded.model, config, example_inputs=example_inputs(loaded.model, loaded.spec))
    save(loaded.model, out, source=loaded.spec)
    click.echo(render(summary(loaded.model, loaded.model.acmtool_info)))
    click.echo(f"\nwrote {out} (initialised only: train it with --budget and --data)")
    if onnx:
        from acmtool.train.pipeline import export_after_convert
        export_after_convert(out, click.echo, force=True)  # checked above
