"""acmtool demo: the main job on a built-in default."""
from __future__ import annotations

import tempfile
from pathlib import Path

import click

from acmtool.cli.main import cli

DEMO_MODEL = "timm:vit_tiny_patch16_224"


@cli.command("demo")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), default=None,
              help="Where to write the demo's files (default: a temporary folder).")
def demo_cmd(output_dir):
    """Convert a default timm ViT (random weights; nothing is downloaded) and inspect it."""
    from acmtool.cli.convert_cmd import convert_cmd
    from acmtool.cli.inspect_cmd import inspect_cmd
    folder = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="acmtool-demo-"))
    ckpt = folder / "vit_tiny.acm.safetensors"
    click.echo(f"== acmtool convert {DEMO_MODEL} -o {ckpt}")
    click.get_current_context().invoke(convert_cmd, model=DEMO_MODEL, output=str(ckpt))
    click.echo(f"\n== acmtool inspect {ckpt}")
    click.get_current_context().invoke(inspect_cmd, checkpoint=str(ckpt))
