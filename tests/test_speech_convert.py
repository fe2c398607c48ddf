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
    tiny_whisper(root / "whisper", layers=2, d_model=32, ffn=64, max_target_positions=16, save=True, init_std=0.5)
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
    parts = v["part_budgets"]  # encoder and decoder apart; the whole is between them
    assert min(parts.values()) - 1e-9 <= v["achieved_budget"] <= max(parts.values()) + 1e-9
    assert "(encoder " in output and ", decoder " in output
    assert "word error rate (greedy decoding" in output and "word error rate: ACM - original" in output
    # the ONNX side: a folder of encoder and decoder graphs, not one .onnx file
    assert (root / "w.acm.whisper" / "encoder.onnx").is_file() and not out.with_name("w.acm.onnx").exists()


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
    assert report["vs_original"]["wer"] == {"diff": 0.0, "se": 0.0, "n": 5, "fewer": 0, "more": 0, "sign_p": 1.0}
    errors = ev.samples["word_errors"]
    assert errors.shape == (5, 2) and errors[:, 1].tolist() == [2, 4, 4, 1, 2]  # reference words per clip ("." is no word)


def test_a_difference_on_one_utterance_shows_an_unknown_error():
    from acmtool.cli.eval_cmd import render_difference
    line = render_difference("wer", {"diff": 0.25, "se": None, "n": 1}, "ACM", "original")
    assert line == "word error rate: ACM - original +25.00 +- ? points (n = 1)"
    line = render_difference("wer", {"diff": -0.9, "se": 0.88, "n": 55, "fewer": 40, "more": 5, "sign_p": 1.6e-7},
                             "ACM", "static")
    assert line == ("word error rate: ACM - static -90.00 +- 88.00 points (n = 55); ACM makes fewer word errors on 40 "
                    "utterances, more on 5 (sign test p = 1.6e-07)")


# --- ONNX: encoder and decoder graphs, greedy decoding in ONNX Runtime ----------------------------
def _audio(table):
    return sorted(str(p) for p in table.parent.glob("*.wav"))


def test_onnx_runtime_transcribes_as_pytorch_at_every_budget(speech_run):
    from acmtool.export.dense_fallback import densified, exported_dense_blocks
    from acmtool.io.checkpoint import load
    from acmtool.layers.control import at_budget
    from acmtool.runtime.transcribe import Transcriber
    from acmtool.train.greedy_decode import greedy_decode, suppression_of
    root, table, out, _ = speech_run
    model = load(out).eval()
    ort = Transcriber(root / "w.acm.whisper", threads=1)
    s = ort.settings
    features = ort.features(_audio(table))
    seen = set()
    dense = list(exported_dense_blocks(root / "w.acm.whisper"))
    assert 0 < len(dense) < 4  # some ACMs exported as dense blocks, some gated: both paths are compared
    for budget in (None, 0.25, 1.0):
        ids = ort.decode_ids(features, budget)
        with at_budget(model, budget), densified(model, dense):  # PyTorch computes them as exported
            ref = greedy_decode(model, torch.from_numpy(features), s["prompt"], s["end_id"],
                                s["max_length"] - len(s["prompt"]), *suppression_of(model))
        assert ids == ref, budget
        seen.update(tuple(r) for r in ids)
    assert len(seen) > 3  # the clips decode differently: the comparison means something


@pytest.mark.parametrize("fmt", ["custom-op", "standard"])
def test_verify_checks_both_graphs_and_the_transcripts(speech_run, fmt):
    import json
    root, table, out, _ = speech_run
    folder = root / f"w-{fmt}.acm.whisper"
    result = CliRunner().invoke(cli, ["export", str(out), "--format", fmt, "-o", str(folder)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == ["decoder_init.onnx", "decoder_with_past.onnx", "encoder.onnx",
                                                       "tokenizer.json", "transcribe.json"]
    result = CliRunner().invoke(cli, ["verify", str(folder), str(out), "--data", str(table), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[: result.output.rindex("}") + 1])
    assert report["passed"] and report["transcripts_same"] == 1.0 and report["utterances"] >= 1
    assert report["graphs"] == ["encoder", "decoder_init", "decoder_with_past"]
    assert all(report[g]["max_abs_diff"] <= 1e-4 for g in report["graphs"])


@pytest.mark.parametrize("fmt", ["custom-op", "standard"])
def test_cached_decoding_gives_pytorchs_ids_at_every_budget(speech_run, fmt):
    """The key/value cache graphs with the decoder's gates kept (--keep-acms; by default this model's
    decoder ACMs export dense): the same ids as PyTorch's greedy loop and as the whole-sequence
    decoding, at several run-time budgets, batch 1 and a batch whose rows end at different steps."""
    import json
    from acmtool.export.dense_fallback import densified, exported_dense_blocks
    from acmtool.io.checkpoint import load
    from acmtool.layers.control import at_budget
    from acmtool.runtime.transcribe import Transcriber
    from acmtool.train.greedy_decode import greedy_decode, suppression_of
    root, table, out, _ = speech_run
    folder = root / f"w-keep-{fmt}.acm.whisper"
    result = CliRunner().invoke(cli, ["export", str(out), "--format", fmt, "--keep-acms", "-o", str(folder)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["verify", str(folder), str(out), "--data", str(table), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[: result.output.rindex("}") + 1])
    for graph in ("decoder_init", "decoder_with_past"):  # gated, at each budget verify checks
        r = report[graph]
        assert r["passed"] and r["max_abs_diff"] <= 1e-4 and r["k_found"] == r["acms"] == 2 and len(r["budgets"]) == 4
    model = load(out).eval()
    cached, whole = Transcriber(folder, threads=1), Transcriber(folder, threads=1, cache=False)
    s = cached.settings
    features = cached.features(_audio(table))
    dense = list(exported_dense_blocks(folder))

    def reference(budget, end):
        with at_budget(model, budget), densified(model, dense):
            return greedy_decode(model, torch.from_numpy(features), s["prompt"], end,
                                 s["max_length"] - len(s["prompt"]), *suppression_of(model))
    for budget in (0.25, 1.0, None):
        ids = cached.decode_ids(features, budget)
        assert ids == whole.decode_ids(features, budget) == reference(budget, s["end_id"]), budget
        assert [cached.decode_ids(features[i: i + 1], budget)[0] for i in (0, 5)] == [ids[0], ids[5]]
    # this model never emits its end id within max_length: a token that rows reach at different
    # steps, made the end id, ends them at different times (ended rows are fed the end id)
    end = next(t for t in sorted({t for r in ids for t in r}) if len({r.index(t) for r in ids if t in r}) >= 2)
    for t in (cached, whole):
        t.settings = {**s, "end_id": end}
    ended = cached.decode_ids(features)
    assert len({len(r) for r in ended}) >= 2
    assert ended == whole.decode_ids(features) == reference(None, end)


def test_export_and_transcribe_refuse_what_they_cannot_do(speech_run, tmp_path):
    root, table, out, _ = speech_run
    folder = root / "w.acm.whisper"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(out)])  # the default folder exists: refused, untouched
    assert result.exit_code == 2 and "already exists: pass --force" in result.output
    (tmp_path / "file").write_text("x")
    result = runner.invoke(cli, ["export", str(out), "-o", str(tmp_path / "file")])
    assert result.exit_code == 2 and "exports to a folder" in result.output
    wav = _audio(table)[:2]
    result = runner.invoke(cli, ["transcribe", str(folder), *wav])
    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.output.splitlines()] == wav
    result = runner.invoke(cli, ["transcribe", str(folder), wav[0], "--budget", "0.01"])
    assert result.exit_code == 2 and "outside the model's calibrated range" in result.output
    result = runner.invoke(cli, ["transcribe", str(table.parent), wav[0]])
    assert result.exit_code == 2 and "not an exported Whisper folder" in result.output
    result = runner.invoke(cli, ["transcribe", str(folder), str(tmp_path / "missing.wav")])
    assert result.exit_code == 2 and "missing.wav" in result.output


def test_inspect_shows_each_graph_of_a_whisper_folder(speech_run):
    import json
    root, _, _, _ = speech_run
    result = CliRunner().invoke(cli, ["inspect", str(root / "w.acm.whisper"), "--json"])
    assert result.exit_code == 0, result.output
    graphs = json.loads(result.output)
    assert sorted(graphs) == ["decoder_init.onnx", "decoder_with_past.onnx", "encoder.onnx"]
    assert graphs["decoder_with_past.onnx"]["inputs"][:3] == ["decoder_input_ids", "position_ids",
                                                             "past_key_values.0.decoder.key"]
    assert graphs["decoder_with_past.onnx"]["outputs"] == ["logits"] + [
        f"present.{i}.decoder.{kv}" for i in range(2) for kv in ("key", "value")]
    result = CliRunner().invoke(cli, ["inspect", str(root / "w.acm.whisper")])
    assert result.exit_code == 0, result.output
    assert "decoder_with_past.onnx:\n" in result.output and "past_key_values.{0..1}.encoder.value" in result.output
    result = CliRunner().invoke(cli, ["inspect", str(root)])
    assert result.exit_code == 2 and "not an exported Whisper folder" in result.output


def test_attention_projections_are_captured_in_the_students_order(tmp_path):
    """Whisper's attention registers k, v, q; the adapters list q, k, v: `--targets mlp+attn` must
    pair every ACM with its own teacher projection, in the student's order."""
    import copy
    from acmtool.config import AcmConfig
    from acmtool.convert.acmize import acmize_
    from acmtool.layers.acm import acm_modules
    from acmtool.train.capture import SiteCapture
    teacher, _ = tiny_whisper(tmp_path / "w", layers=1, d_model=32, ffn=64)
    student = copy.deepcopy(teacher)
    acmize_(student, AcmConfig(targets="mlp+attn"))
    capture = SiteCapture(teacher, student, "mlp+attn")
    ids = torch.full((2, 3), teacher.config.decoder_start_token_id)
    _, caps = capture({"input_features": torch.randn(2, 8, 3000), "decoder_input_ids": ids})
    acms = acm_modules(student)
    assert list(caps) == [n for n, _ in acms]
    attn = teacher.model.decoder.layers[0].self_attn
    for name, m in acms:
        z, out = caps[name]
        assert z.shape[-1] == m.in_features and out.shape[-1] == m.out_features, name
    z, out = caps["model.decoder.layers.0.self_attn.k_proj"]
    torch.testing.assert_close(out, attn.k_proj(z))  # k's teacher output, not q's or v's
