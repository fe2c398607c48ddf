"""acmtool visualize CKPT IMAGE -o map.png: the per-token compute map over an image."""
from __future__ import annotations

import click

from acmtool.cli.main import cli


@cli.command("visualize")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, help="The .png file to write.")
@click.option("--layer", default="all", show_default=True,
              help="all: the mean over the image and a map per ACM; mean: only the mean; NAME: one ACM "
                   "(or the ACMs inside a module, such as blocks.0).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def visualize_cmd(checkpoint, image, output, layer, force):
    """Draw how many learners each patch of IMAGE runs in CHECKPOINT (a vision transformer: timm ViT
    family, Hugging Face ViT/DeiT/Dinov2), as in the ACM paper's Figure 1."""
    from acmtool.io.outputs import refuse_existing
    from acmtool.visualize import visualize
    refuse_existing([output], force)
    cmap = visualize(checkpoint, image, output, layer)
    gh, gw = cmap.grid
    click.echo(f"{len(cmap.layers)} ACMs on a {gh}x{gw} patch grid; mean learners per patch "
               f"{float(cmap.mean.mean()):.2f} (range {cmap.min_k}..{cmap.max_k})")
    click.echo(f"wrote {output}")
