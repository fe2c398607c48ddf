"""wav2vec2 speech to text (CTC): transcripts as character ids, padded waveform batches whose frames
are counted through the feature encoder's lengths, conversion with KD on the CTC logits, word error
rates from greedy CTC decoding, and the exported model transcribing in ONNX Runtime as PyTorch does.
No wav2vec2 weights install here: a tiny seeded Wav2Vec2ForCTC (tests/tiny_speech.py), seconds a run."""
import json
import re

import pytest
import torch
from click.testing import CliRunner

from acmtool.cli.main import cli
from acmtool.data.ctc_tokens import CtcTokens, read_ctc_tokens
from acmtool.errors import AcmInputError
from acmtool.io.call import frame_mask, token_mask
from acmtool.runtime.ctc_text import collapse, frames_of, spell
from acmtool.train.ctc_decode import ctc_greedy

pytest.importorskip("soundfile", reason="pip install soundfile (requirements.lock) to run the speech tests")
from tiny_speech import CHARS, tiny_wav2vec2, transcript_folder  # noqa: E402

CLIPS = [(f"c{i}.wav", 8000 if i % 2 else 16000, 1, text) for i, text in enumerate(
    ["hello world .", "press one for sales", "press two for support .", "hello", "press one", "world .",
     "two for sales", "hello press one", "support .", "press two", "one for support", "hello world"])]


# --- transcripts as characters --------------------------------------------------------------------
def _tokens(**kw):
    return CtcTokens({c: i for i, c in enumerate(CHARS)}, blank=0, **kw)


def test_transcripts_spell_in_the_vocabularys_case_and_come_back():
    t = _tokens()
    ids = t("Hello,  world!")
    assert [CHARS[i] for i in ids] == list("HELLO|WORLD")  # capitals, punctuation out, one delimiter
    assert t.text(ids) == "HELLO WORLD"
    assert t("  ") == [] and t(". ,") == []
    assert t("hello 9") == t("hello") + [t.delimiter_id, t.unk_id]  # a digit the vocabulary lacks: unknown
    with pytest.raises(AcmInputError, match="'9'.*no unknown token"):
        _tokens(unk=None)("hello 9")
    lower = CtcTokens({c.lower() if len(c) == 1 else c: i for i, c in enumerate(CHARS)}, blank=0)
    assert lower.text(lower("HeLLo")) == "hello"  # a lower-case vocabulary keeps lower case


def test_transcripts_match_transformers_ctc_tokenizer(tmp_path):
    from transformers import Wav2Vec2CTCTokenizer
    tiny_wav2vec2(tmp_path, save=False)
    ours = read_ctc_tokens(tmp_path, blank=0)
    theirs = Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"))
    for text in ["HELLO WORLD", "PRESS ONE FOR SALES", "SUPPORT'S", "A"]:
        assert ours(text) == theirs(text).input_ids
        assert ours.text(ours(text)) == theirs.decode(theirs(text).input_ids, group_tokens=False) == text
    # a frame sequence: repeats merged, blanks dropped, as its batch_decode reads argmax ids
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, len(CHARS), (3, 40), generator=g)
    frames[:, ::3] = 0
    lengths = torch.tensor([40, 17, 0])
    logits = torch.nn.functional.one_hot(frames).float()
    got = [ours.text(ids) for ids in ctc_greedy(logits, lengths, 0)]
    # its default decode: repeats grouped, blanks out, other special tokens kept as text (dropped here)
    want = [" ".join(re.sub("<s>|</s>|<unk>", "", theirs.decode(row[:n].tolist())).split())
            for row, n in zip(frames, lengths)]
    assert got == want


def test_ctc_text_edge_cases():
    assert collapse([], 0) == [] and collapse([0, 0, 0], 0) == []
    assert collapse([5, 5, 0, 5, 6, 6], 0) == [5, 5, 6]
    chars = {0: "<pad>", 1: "|", 2: "A", 3: "B"}
    assert spell([1, 2, 1, 1, 3, 0, 1], chars, "|") == "A B"
    assert frames_of(800, [(10, 5), (8, 4)]) == 38 and frames_of(5, [(10, 5)]) == 0


def test_bad_vocabularies_are_clear_errors(tmp_path):
    with pytest.raises(AcmInputError, match="no vocab.json"):
        read_ctc_tokens(tmp_path, blank=0)
    (tmp_path / "vocab.json").write_text(json.dumps({"en": {"A": 1}}))
    with pytest.raises(AcmInputError, match="one vocabulary per language"):
        read_ctc_tokens(tmp_path, blank=0)
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(AcmInputError, match="could not be read"):
        read_ctc_tokens(tmp_path, blank=0)
    (tmp_path / "vocab.json").write_text(json.dumps({"<pad>": 0, "A": 1}))
    with pytest.raises(AcmInputError, match="no word delimiter"):
        read_ctc_tokens(tmp_path, blank=0)
    (tmp_path / "vocab.json").write_text(json.dumps({"<pad>": 0, "|": 1}))
    with pytest.raises(AcmInputError, match="blank\\) id 7 is not in"):
        read_ctc_tokens(tmp_path, blank=7)


# --- data and frames ------------------------------------------------------------------------------
def test_audio_batches_are_padded_waveforms_with_a_mask_over_frames(tmp_path):
    from acmtool.data import load_data
    model, spec = tiny_wav2vec2(tmp_path / "w2v", save=False)
    table = transcript_folder(tmp_path / "clips", rows=CLIPS[:4])
    data = load_data(str(table), model, spec, val_fraction=0.0)
    assert data.kind == "audio" and data.transcripts.blank == 0 and data.transcripts.prompt == ()
    inputs, labels = data.collate([data.train[i] for i in range(4)])
    assert set(inputs) == {"input_values", "attention_mask"}
    lengths = inputs["attention_mask"].sum(-1)
    assert len(set(lengths.tolist())) > 1 and int(lengths.max()) == inputs["input_values"].shape[1]
    texts = sorted(data.transcripts.decode([i for i in row if i >= 0]) for row in labels.tolist())
    assert texts == sorted(["HELLO WORLD", "PRESS ONE FOR SALES", "PRESS TWO FOR SUPPORT", "HELLO"])
    frames = token_mask(inputs, model)
    want = model._get_feature_vector_attention_mask(model(**inputs).logits.shape[1], inputs["attention_mask"])
    assert torch.equal(frames.bool(), want.bool())
    assert token_mask(inputs) is inputs["attention_mask"]  # without the model: the samples' mask
    assert frame_mask(torch.nn.Linear(2, 2), inputs["attention_mask"]) is inputs["attention_mask"]
    assert frames_of(int(lengths[0]), [[10, 5], [8, 4]]) == int(frames[0].sum())


def test_folders_without_a_preprocessor_config_or_a_ctc_head(tmp_path):
    from transformers import Wav2Vec2Model
    from acmtool.data.speech_prep import speech_prep
    model, spec = tiny_wav2vec2(tmp_path / "w2v", save=False)
    (tmp_path / "w2v" / "preprocessor_config.json").unlink()
    prep = speech_prep(model, spec, transcripts=True)  # built from the config: layer norm -> a mask
    assert prep.rate == 16000 and prep.extractor.return_attention_mask and prep.pad_waveforms
    with pytest.raises(AcmInputError, match="CTC head"):
        speech_prep(Wav2Vec2Model(model.config), spec, transcripts=True)
    (tmp_path / "w2v" / "vocab.json").unlink()
    with pytest.raises(AcmInputError, match="no vocab.json"):
        speech_prep(model, spec, transcripts=True)


# --- conversion, evaluation, ONNX -----------------------------------------------------------------
@pytest.fixture(scope="module")
def w2v_run(tmp_path_factory):
    """A two-layer tiny wav2vec2 converted at 0.5 on 12 clips (6 held out)."""
    root = tmp_path_factory.mktemp("w2v")
    tiny_wav2vec2(root / "w2v", hidden=32)
    table = transcript_folder(root / "clips", rows=CLIPS)
    out = root / "w.acm.safetensors"
    args = ["convert", str(root / "w2v"), "--budget", "0.5", "--data", str(table), "--val-fraction", "0.5",
            "--batch-size", "4", "--max-steps", "2", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return root, table, out, result.output


def test_wav2vec2_converts_and_reports_word_error_rates(w2v_run):
    root, table, out, output = w2v_run
    report = json.loads(out.with_name("w.report.json").read_text())
    stages = report["stage_seconds"]  # where the conversion's time went
    assert list(stages) == ["prepare", "distill", "gates", "finetune", "budget", "evaluate", "export"]
    assert all(s >= 0 for s in stages.values()) and sum(stages.values()) <= report["wall_time_s"] + stages["export"]
    v = report["validation"]
    assert v["task"] == "transcription" and v["decoding"] == "ctc" and v["eval_samples"] == 6
    assert 0 <= v["teacher_wer"] and 0 <= v["student_wer"] and set(v["vs_original"]) == {"wer"}
    # the frames counted are the held-out clips' real ones, padding left out
    from acmtool.data import load_data
    from acmtool.io.checkpoint import load
    model = load(out)
    held_out = load_data(str(table), model, model.acmtool_info["source"], val_fraction=0.5).val
    frames = [frames_of(len(x["input_values"]), [[10, 5], [8, 4]]) for x, _ in held_out]
    assert v["eval_tokens"] == sum(frames) and len(set(frames)) > 1
    assert sum(sum(layer["histogram"]) for layer in v["per_layer"].values()) == 2 * v["eval_tokens"]
    assert 0 < v["achieved_budget"] <= 1
    assert "word error rate (greedy decoding" in output and "the audio's" in output and "frames" in output
    meta = json.loads(_metadata(out.with_name("w.acm.onnx"))["acmtool.ctc"])
    assert meta["blank"] == 0 and meta["delimiter"] == "|" and meta["convolutions"] == [[10, 5], [8, 4]]


def _metadata(path):
    from acmtool.runtime.model_header import read_header
    return read_header(path).metadata


def test_onnx_runtime_transcribes_as_pytorch_at_every_budget(w2v_run):
    from acmtool.data.audio import load_audio_data
    from acmtool.data.speech_prep import speech_prep
    from acmtool.export.dense_fallback import densified, exported_dense_blocks
    from acmtool.io.checkpoint import load
    from acmtool.layers.control import at_budget
    from acmtool.runtime.ctc_transcribe import CtcTranscriber
    from acmtool.train.ctc_decode import ctc_transcribe
    root, table, out, _ = w2v_run
    onnx = out.with_name("w.acm.onnx")
    model = load(out).eval()
    ort = CtcTranscriber(onnx, threads=1)
    data = load_audio_data(str(table), speech_prep(model, model.acmtool_info["source"], True), val_fraction=0.0)
    paths = [str(p) for p in data.train.dataset.paths]
    inputs, _ = data.collate([data.train[i] for i in range(len(paths))])  # one padded batch of every clip
    dense = list(exported_dense_blocks(onnx))
    seen = set()
    for budget in (None, 0.25, 1.0):
        texts = ort(paths, budget, batch_size=5)  # padded batches of other shapes
        with at_budget(model, budget), densified(model, dense):  # PyTorch computes them as exported
            ref = [data.transcripts.decode(ids) for ids in ctc_transcribe(model, inputs, 0)]
        assert texts == ref, budget
        seen.update(texts)
    assert len(seen) > 3  # the clips decode differently: the comparison means something
    result = CliRunner().invoke(cli, ["transcribe", str(onnx), paths[0], "--json", "--budget", "0.5"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.splitlines()[-1]) == {"path": paths[0], "text": ort(paths[:1], 0.5)[0]}


def test_transcribe_refuses_models_it_cannot_read(w2v_run, tmp_path):
    from acmtool.runtime.ctc_transcribe import CtcTranscriber
    root, table, out, _ = w2v_run
    plain = tmp_path / "plain.onnx"
    result = CliRunner().invoke(cli, ["export", str(out), "-o", str(plain)])
    assert result.exit_code == 0, result.output
    assert "acmtool.ctc" in _metadata(plain)
    clip = next(table.parent.glob("*.wav"))
    low, high = CtcTranscriber(plain).budget_range()
    result = CliRunner().invoke(cli, ["transcribe", str(plain), str(clip), "--budget", str(high + 0.5)])
    assert result.exit_code != 0 and "outside the model's calibrated range" in result.output
    vit = tmp_path / "vit.onnx"
    import onnx
    model = onnx.load(str(plain))
    del model.metadata_props[:]
    onnx.save(model, str(vit))
    with pytest.raises(AcmInputError, match="not a CTC speech model"):
        CtcTranscriber(vit)


def test_a_group_norm_model_exports_without_a_mask_and_transcribes_one_clip_a_run(tmp_path):
    """wav2vec2-base's feature encoder (group norm) takes no attention mask: its graph has none, and
    ONNX Runtime runs clips of different lengths one at a time, so padding never reaches it."""
    from acmtool.export.dense_fallback import densified, exported_dense_blocks
    from acmtool.io.checkpoint import load
    from acmtool.runtime.ctc_transcribe import CtcTranscriber
    from acmtool.train.ctc_decode import ctc_transcribe
    tiny_wav2vec2(tmp_path / "w2v", norm="group")
    table = transcript_folder(tmp_path / "clips", rows=CLIPS[:4])
    out = tmp_path / "g.acm.safetensors"
    args = ["convert", str(tmp_path / "w2v"), "--budget", "0.5", "--data", str(table), "--val-fraction", "0.5",
            "--batch-size", "2", "--max-steps", "1", "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    ort = CtcTranscriber(out.with_name("g.acm.onnx"), threads=1)
    assert "attention_mask" not in ort.inputs
    paths = sorted(str(p) for p in table.parent.glob("*.wav"))
    model = load(out).eval()
    with densified(model, list(exported_dense_blocks(out.with_name("g.acm.onnx")))):  # as exported
        ref = [spell(ctc_transcribe(model, {"input_values": torch.from_numpy(ort.waveform(p))[None]}, 0)[0],
                     ort.chars, "|") for p in paths]
    assert ort(paths, batch_size=4) == ref and len(set(ref)) > 1
