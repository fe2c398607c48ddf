"""acmtool inspect CKPT: per-layer learners and FLOPs."""
from __future__ import annotations

import json

import click

from acmtool.cli.main import cli


@cli.command("inspect")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect_cmd(checkpoint, as_json):
    """Show each ACM of CHECKPOINT: learners, width, FLOPs per token at each k, gate FLOPs,
    and whole-model FLOPs against the original model."""
    from acmtool.io.checkpoint import load
    from acmtool.report import render, summary
    model = load(checkpoint)
    s = summary(model, model.acmtool_info)
    if as_json:
        click.echo(json.dumps(s, indent=2))
    else:
        click.echo(f"{checkpoint}: {model.acmtool_info['source'].get('name') or model.acmtool_info['source'].get('class', '')}"
                   f", config {model.acmtool_info['config']}")
        click.echo(render(s))
