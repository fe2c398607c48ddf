"""acmtool demo: the main job on a built-in default."""
from __future__ import annotations

from pathlib import Path

import click

from acmtool.cli.main import cli


@cli.command("demo")
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), default="acmtool-demo", show_default=True,
              help="Where to write the demo's checkpoints and reports.")
@click.option("--budget", type=float, default=0.5, show_default=True)
def demo_cmd(output_dir, budget):
    """Train a small ViT on Fashion-MNIST (cached after the first run), convert it at the budget,
    and compare dense, ACM and the static baseline on the test set."""
    from acmtool.demo.run import run_demo
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    run_demo(folder, budget=budget, log=click.echo)
