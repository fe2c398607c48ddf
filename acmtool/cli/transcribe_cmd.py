"""acmtool transcribe MODEL AUDIO...: speech to text in ONNX Runtime from an exported Whisper folder or
an exported CTC model (wav2vec2)."""
from __future__ import annotations

import json

import click

from acmtool.cli.main import cli
from acmtool.errors import AcmInputError


@cli.command("transcribe")
@click.argument("model_dir", type=click.Path(exists=True))
@click.argument("audio", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--budget", type=float, default=None,
              help="The ACMs' run-time budget, within the model's calibrated range (default: the trained one).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="ONNX Runtime's intra-op threads.")
@click.option("--provider", default="CPUExecutionProvider", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file: path and text.")
def transcribe_cmd(model_dir, audio, budget, batch_size, threads, provider, as_json):
    """Transcribe AUDIO files (any rate, mono or stereo) with MODEL_DIR: the NAME.acm.whisper folder
    that `acmtool export` (or convert) writes for a Whisper (up to the 30 s it hears at once), or
    the NAME.acm.onnx of a wav2vec2 CTC model (any length). Greedy decoding, the same text as the
    PyTorch model. Prints one line per file: path, a tab, the text."""
    from pathlib import Path
    if Path(model_dir).is_file():
        from acmtool.runtime.ctc_transcribe import CtcTranscriber
        t = CtcTranscriber(model_dir, [provider], threads)
    else:
        from acmtool.runtime.transcribe import Transcriber
        t = Transcriber(model_dir, [provider], threads)
    if budget is not None:
        low, high = t.budget_range()
        if not low <= budget <= high:
            raise AcmInputError(f"--budget {budget:g} is outside the model's calibrated range [{low:g}, {high:g}]")
    for path, text in zip(audio, t(list(audio), budget, batch_size)):
        click.echo(json.dumps({"path": path, "text": text}) if as_json else f"{path}\t{text}")
