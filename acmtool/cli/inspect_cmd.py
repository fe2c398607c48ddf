"""acmtool inspect CKPT|model.onnx: per-layer learners and FLOPs."""
from __future__ import annotations

import json

import click

from acmtool.cli.main import cli


@cli.command("inspect")
@click.argument("checkpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def inspect_cmd(checkpoint, as_json):
    """Show each ACM of CHECKPOINT: learners, width, FLOPs per token at each k, gate FLOPs,
    and whole-model FLOPs against the original model. Given an exported .onnx model: its format,
    its ACMs (k and width of a static one) and its DynamicLearners nodes; given an exported Whisper
    folder (NAME.acm.whisper): the same for each of its graphs."""
    from pathlib import Path
    if Path(checkpoint).is_dir():
        from acmtool.export.inspect_onnx import onnx_summary, render_onnx
        from acmtool.export.seq2seq import read_settings
        read_settings(checkpoint)  # a clear error for any other folder
        graphs = {p.name: onnx_summary(p) for p in sorted(Path(checkpoint).glob("*.onnx"))}
        click.echo(json.dumps(graphs, indent=2) if as_json else
                   "\n\n".join(f"{name}:\n{render_onnx(s)}" for name, s in graphs.items()))
        return
    if checkpoint.lower().endswith(".onnx"):
        from acmtool.export.inspect_onnx import onnx_summary, render_onnx
        s = onnx_summary(checkpoint)
        click.echo(json.dumps(s, indent=2) if as_json else render_onnx(s))
        return
    from acmtool.io.checkpoint import load
    from acmtool.layers.acm import acm_modules
    from acmtool.report import render, summary
    model = load(checkpoint)
    s = summary(model, model.acmtool_info)
    if as_json:
        click.echo(json.dumps(s, indent=2))
    else:
        click.echo(f"{checkpoint}: {model.acmtool_info['source'].get('name') or model.acmtool_info['source'].get('class', '')}"
                   f", config {model.acmtool_info['config']}")
        if model.acmtool_info.get("static"):
            ks = sorted({m.forced_k for _, m in acm_modules(model)})
            click.echo(f"static baseline at budget {model.acmtool_info.get('budget')}: every token runs k = "
                       f"{', '.join(map(str, ks))} learners, no gate (it exports as a dense model of that width)")
        click.echo(render(s))
