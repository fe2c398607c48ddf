"""Speech-to-text conversion: a Whisper's encoder and decoder MLPs become ACMs, distilled on the
decoder's logits token by token (padding never counts), and every evaluation scores greedy
transcripts by word error rate with a paired standard error over utterances. A tiny seeded Whisper
and synthetic clips (tests/tiny_speech.py): seconds per conversion."""
import math

import pytest
import torch
from click.testing import CliRunner

from acmtool.cli.main import cli
from acmtool.io.call import main_output, per_token, token_mask

pytest.importorskip("soundfile", reason="pip install soundfile (requirements.lock) to run the speech tests")
from tiny_speech import tiny_whisper, transcript_folder  # noqa: E402

CLIPS = [(f"c{i}.wav", 8000 if i % 2 else 16000, 1, text) for i, text in enumerate(
    ["hello world .", "press one for sales", "press two for support .", "hello", "press one", "world .",
     "two for sales", "hello press one", "support .", "press two", "one for support", "hello world"])]


def test_decoder_logits_come_one_row_per_real_token():
    class Out:
        logits = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    kind, rows = main_output(Out(), mask)
    assert kind == "logits" and rows.shape == (3, 4)
    assert torch.equal(rows, Out.logits[mask.bool()])
    assert main_output(Out(), None)[1].shape == (6, 4)  # no mask: every token
    assert main_output(Out(), torch.ones(2, 5))[1].shape == (6, 4)  # a mask of other tokens (an encoder's)
    labels = torch.tensor([[5, 6, -100], [7, -100, -100]])
    assert per_token(labels, mask).tolist() == [5, 6, 7]
    # the attention mask wins; the decoder's is the fallback; tensors are not dicts
    a, d = torch.ones(2, 4), torch.ones(2, 3)
    assert token_mask({"attention_mask": a, "decoder_attention_mask": d}) is a
    assert token_mask({"input_features": a, "decoder_attention_mask": d}) is d
    assert token_mask(a) is None


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    """A two-layer tiny Whisper converted at 0.5 on 12 clips (6 held out), its folder and table."""
    root = tmp_path_factory.mktemp("speech")
    tiny_whisper(root / "whisper", layers=2, d_model=32, ffn=64, max_target_positions=16, save=True)
    table = transcript_folder(root / "clips", rows=CLIPS)
    out = root / "w.acm.safetensors"
    args = ["convert", str(root / "whisper"), "--budget", "0.5", "--data", str(table), "--val-fraction", "0.5",
            "--batch-size", "4", "--max-steps", "2", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return root, table, out, result.output


def test_whisper_converts_and_reports_word_error_rates(speech_run):
    import json
    root, _, out, output = speech_run
    report = json.loads(out.with_name("w.report.json").read_text())
    v = report["validation"]
    assert v["task"] == "transcription" and v["eval_samples"] == 6
    assert 0 <= v["teacher_wer"] and 0 <= v["student_wer"] and math.isfinite(v["student_wer"])
    d = v["vs_original"]["wer"]
    assert d["n"] == 6 and d["diff"] == pytest.approx(v["student_wer"] - v["teacher_wer"])
    assert set(v["vs_original"]) == {"wer"}  # tokens of one utterance are not independent samples
    # the teacher-forced tokens are the held-out transcripts' real ones: prompt + words + end, no padding
    assert 6 * 3 <= v["eval_tokens"] <= 6 * 16
    layers = v["per_layer"]
    assert any(".encoder." in n for n in layers) and any(".decoder." in n for n in layers)
    assert 0 < v["achieved_budget"] <= 1
    assert "word error rate (greedy decoding" in output and "word error rate: ACM - original" in output
    # one graph cannot run a decoder's loop: said plainly, the checkpoint kept, no ONNX file
    assert "not exported to ONNX" in output and "encoder-decoder models" in output and "retry" not in output
    assert out.is_file() and not out.with_name("w.acm.onnx").exists()


def test_eval_repeats_the_conversions_word_error_rates(speech_run):
    import json
    root, table, out, _ = speech_run
    report = json.loads(out.with_name("w.report.json").read_text())["validation"]
    result = CliRunner().invoke(cli, ["eval", str(out), "--data", str(table), "--json", str(root / "e.json")])
    assert result.exit_code == 0, result.output
    again = json.loads((root / "e.json").read_text())
    assert again["task"] == "transcription" and again["eval_samples"] == 6
    assert again["teacher_wer"] == pytest.approx(report["teacher_wer"])
    assert again["student_wer"] == pytest.approx(report["student_wer"])


def test_a_model_against_itself_has_no_wer_difference(tmp_path):
    from acmtool.data import load_data
    from acmtool.train.evaluate import evaluate
    from acmtool.data.length_batches import eval_loader
    model, spec = tiny_whisper(tmp_path / "whisper", layers=1)
    table = transcript_folder(tmp_path / "clips", rows=CLIPS[:5])
    data = load_data(str(table), model, spec, val_fraction=0.0)
    assert data.transcripts is not None and data.transcripts.prompt[-1] != data.transcripts.end_id
    loader = eval_loader(data.train, 2, data.collate, data.kind)
    report, ev = evaluate(model, model, loader, torch.device("cpu"), None, transcripts=data.transcripts)
    assert report["task"] == "transcription" and report["eval_samples"] == 5
    assert report["student_wer"] == report["teacher_wer"]
    assert report["vs_original"]["wer"] == {"diff": 0.0, "se": 0.0, "n": 5}
    errors = ev.samples["word_errors"]
    assert errors.shape == (5, 2) and errors[:, 1].tolist() == [2, 4, 4, 1, 2]  # reference words per clip ("." is no word)
