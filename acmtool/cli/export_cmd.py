"""acmtool export / verify / library-path: the ONNX side of the command line."""
from __future__ import annotations

import json

import click

from acmtool.cli.main import cli
from acmtool.export.dense_fallback import DENSE_ABOVE
from acmtool.errors import AcmCheckFailed


@cli.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(), default=None,
              help="The .onnx file to write (default: NAME.acm.onnx beside NAME.acm.safetensors); for Whisper the "
                   "folder of its encoder and decoder graphs (default: NAME.acm.whisper).")
@click.option("--format", "fmt", type=click.Choice(["custom-op", "standard"]), default="custom-op", show_default=True,
              help="custom-op: ai.acmtool::DynamicLearners nodes (needs the library); standard: stock ops only.")
@click.option("--dense-above", type=click.FloatRange(min=0, min_open=True), default=DENSE_ABOVE, show_default=True,
              help="An ACM whose expected cost (mean k / N on the conversion's held-out data, plus its gate's share) "
                   "reaches this exports as its dense block, which it cannot beat.")
@click.option("--keep-acms", is_flag=True, help="Export every ACM as an ACM, whatever it is expected to cost.")
@click.option("--force", is_flag=True, help="Replace an existing output file (and Triton model folder).")
@click.option("--triton-repo", type=click.Path(file_okay=False), default=None,
              help="Also add the model to this Triton Inference Server model repository: NAME/1/model.onnx, "
                   "NAME/config.pbtxt (dynamic batching, model_operations) and the custom-op library beside it.")
@click.option("--triton-name", default=None, help="The model's name in the repository (default: the file's name).")
@click.option("--triton-max-batch", type=click.IntRange(min=0), default=8, show_default=True,
              help="max_batch_size of config.pbtxt (0: no batching).")
@click.option("--triton-mount", default="/models", show_default=True,
              help="Where the server sees the repository (its --model-repository): the library's path in "
                   "config.pbtxt is taken from it.")
def export_cmd(checkpoint, output, fmt, dense_above, keep_acms, force, triton_repo, triton_name, triton_max_batch,
               triton_mount):
    """Export CHECKPOINT to ONNX, batch and sequence axes dynamic. A static checkpoint (convert
    --static) exports as the narrower dense model it is, in either format: plain ONNX, no gate, no
    custom op. ACMs that spend (nearly) all their learners export as dense blocks (see
    --dense-above); `acmtool inspect` lists them."""
    from acmtool.export import export_checkpoint
    from acmtool.export.dense_fallback import dense_fallback_line
    from acmtool.io.checkpoint import read_info
    info = read_info(checkpoint)
    static = bool(info.get("static"))
    if triton_repo:  # refused before the export's work, not after it
        from acmtool.export.triton import check_request
        from acmtool.io.outputs import onnx_path
        whisper = (info["source"].get("config") or {}).get("model_type") == "whisper"
        check_request(output or onnx_path(checkpoint), triton_repo, triton_name, triton_max_batch, force, whisper)
    path = export_checkpoint(checkpoint, output, fmt, force=force, dense_above=None if keep_acms else dense_above)
    kind = "static: plain ONNX, no custom op needed" if static else fmt
    click.echo(f"wrote {path} ({kind})")
    line = dense_fallback_line(path)
    if line:
        click.echo(line)
    if triton_repo:
        from acmtool.export.triton import write_triton_repo
        done = write_triton_repo(path, triton_repo, triton_name, triton_max_batch, triton_mount, force=force)
        check = ("checked against Triton's model-config schema" if done["validated"] else
                 "not checked against Triton's schema (pip install tritonclient to check it)")
        click.echo(f"wrote the Triton model {done['folder']} ({check})")
        if done["library"]:
            click.echo(f"  config.pbtxt loads the library from {done['library']}: start the server with "
                       f"--model-repository={triton_mount}")


@cli.command("verify")
@click.argument("onnx_model", type=click.Path())
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", default=None, help="Inputs from this dataset's validation split (default: random inputs).")
@click.option("--batches", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--tolerance", type=click.FloatRange(min=0), default=1e-4, show_default=True,
              help="Largest allowed |ORT - PyTorch|, times the output's largest magnitude where that is over 1.")
@click.option("--provider", default="CPUExecutionProvider", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def verify_cmd(onnx_model, checkpoint, data, batches, batch_size, tolerance, provider, as_json):
    """Run ONNX_MODEL in ONNX Runtime and CHECKPOINT in PyTorch on the same inputs; exit 1 when the
    outputs differ by more than the tolerance. ONNX_MODEL may be an exported Whisper folder
    (NAME.acm.whisper): both graphs are checked, and the greedy transcripts must be the same."""
    from pathlib import Path

    from acmtool.export.inputs import verification_batches
    from acmtool.export.seq2seq import verify_whisper, verify_whisper_line
    from acmtool.export.verify import verify, verify_line
    from acmtool.io.checkpoint import load
    model = load(checkpoint)
    inputs = verification_batches(model, data, batches, batch_size)
    whisper = Path(onnx_model).is_dir()
    report = (verify_whisper if whisper else verify)(onnx_model, model, inputs, tolerance, providers=[provider])
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo((verify_whisper_line if whisper else verify_line)(report))
    if not report["passed"]:
        if whisper and report["graphs_passed"]:
            raise AcmCheckFailed(f"greedy transcripts differ from PyTorch's on "
                                 f"{100 * (1 - report['transcripts_same']):.1f} % of utterances")
        failed = [report[g] for g in report["graphs"] if not report[g]["passed"]] if whisper else [report]
        raise AcmCheckFailed("outputs differ by more than allowed: " + "; ".join(
            f"{r['max_abs_diff']:.3g} > {r['allowed']:.3g}" + _float64_reason(r.get("float64")) for r in failed))
    click.echo("verify: ok")


def _float64_reason(f64) -> str:
    """Why float64 did not excuse the difference ('' where float64 was not asked)."""
    from acmtool.export.float64_check import FLOAT32_SLACK
    if not f64:
        return ""
    return (f", and against float64 ONNX Runtime is off by {f64['ort']:.3g}, beyond the {f64['bound']:.3g} that "
            f"float32 rounding explains ({FLOAT32_SLACK:g} x the float32 reference's {f64['reference']:.3g})")


@cli.command("library-path")
@click.option("--info", is_flag=True, help="Also print what the library holds: the acmtool version that built it, "
                                           "the ONNX Runtime it needs, its op versions, CPU kernels and CUDA.")
def library_path_cmd(info):
    """Print the path of the custom-op library (for SessionOptions.register_custom_ops_library)."""
    from acmtool.runtime import library_info, library_path
    if not info:
        click.echo(library_path())
        return
    from acmtool.cli.library_info import describe
    click.echo(describe(library_info()))
