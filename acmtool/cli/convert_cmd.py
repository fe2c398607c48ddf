"""acmtool convert MODEL: replace the model's dense blocks with ACMs and write the checkpoint."""
from __future__ import annotations

from pathlib import Path

import click

from acmtool.cli.main import cli
from acmtool.cli.options import model_source_options, parse_model_args


def default_output(model: str) -> Path:
    name = model[5:] if model.startswith("timm:") else Path(model.rstrip("/")).name.split(".")[0]
    return Path(f"{name}.acm.safetensors")


@cli.command("convert")
@click.argument("model")
@model_source_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="The ACM checkpoint to write (default: NAME.acm.safetensors).")
@click.option("--learners", "num_learners", type=click.IntRange(min=1), default=4, show_default=True,
              help="N, the learners per ACM.")
@click.option("--targets", type=click.Choice(["mlp", "mlp+attn"]), default="mlp", show_default=True,
              help="Convert MLPs only, or MLPs and attention projections.")
def convert_cmd(model, weights, arch, model_args, trust_pickle, output, num_learners, targets):
    """Convert MODEL (timm:NAME, a Hugging Face folder, a .pt/.pth or .safetensors file) into an
    ACM checkpoint, initialised from its weights."""
    from acmtool.config import AcmConfig
    from acmtool.convert.acmize import acmize_
    from acmtool.io.checkpoint import save
    from acmtool.io.sources import example_inputs, load_model
    from acmtool.report import render, summary

    config = AcmConfig(num_learners=num_learners, targets=targets)
    out = Path(output) if output else default_output(model)
    loaded = load_model(model, weights=weights, arch=arch, trust_pickle=trust_pickle,
                        model_kwargs=parse_model_args(model_args))
    acmize_(loaded.model, config, example_inputs=example_inputs(loaded.model, loaded.spec))
    save(loaded.model, out, source=loaded.spec)
    click.echo(render(summary(loaded.model, loaded.model.acmtool_info)))
    click.echo(f"\nwrote {out}")
