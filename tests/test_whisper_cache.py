"""The Whisper decoder with a key/value cache (acmtool.export.whisper_cache): its PyTorch forward
against Hugging Face's decoder, its two graphs in ONNX Runtime against PyTorch, and folders exported
before those graphs (decoder.onnx alone), which still transcribe. A tiny seeded Whisper with every
MLP and attention projection an ACM (mlp+attn) and random gates, so that tokens run different k.
The trained checkpoint's side (budgets, both formats, `acmtool verify`) is in test_speech_convert."""
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("soundfile", reason="pip install soundfile (requirements.lock) to run the speech tests")
from tiny_speech import tiny_whisper  # noqa: E402

LAYERS, TOL = 2, 1e-4


def _tiny(folder, acms: bool):
    model, spec = tiny_whisper(folder, layers=LAYERS, d_model=32, ffn=64, max_target_positions=16, save=True,
                               init_std=0.5)
    if acms:
        from acmtool.config import AcmConfig
        from acmtool.convert.acmize import acmize_
        from acmtool.layers.acm import acm_modules
        acmize_(model, AcmConfig(targets="mlp+attn"))
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # a fresh gate picks k = N everywhere: random ones pick all sorts
            for _, m in acm_modules(model):
                for p in m.gate.parameters():
                    p.copy_(torch.randn(p.shape, generator=g))
    return model.eval(), spec


def _features(batch=4, seed=0):
    return torch.randn(batch, 8, 3000, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def acm_whisper(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    model, spec = _tiny(root / "whisper", acms=True)
    return root, model, spec


@pytest.mark.parametrize("acms", [False, True])
def test_the_cached_forward_is_hugging_faces_decoder(tmp_path, acms):
    from acmtool.export.seq2seq import DecoderPart, EncoderPart
    from acmtool.export.whisper_cache import PAST, DecoderInit, DecoderWithPast, kv_names
    from acmtool.layers.acm import acm_modules
    model, _ = _tiny(tmp_path / "w", acms)
    with torch.no_grad():
        hidden = EncoderPart(model).eval()(_features(3))
        ids = torch.randint(0, model.config.vocab_size, (3, 9), generator=torch.Generator().manual_seed(2))
        full = DecoderPart(model).eval()(ids, hidden)  # HF's decoder on the whole sequence
        out = DecoderInit(model).eval()(ids[:, :3], hidden)  # a prompt of 3: the causal mask matters
        assert len(out) == 1 + 4 * LAYERS and out[1].shape == (3, 2, 3, 16) and out[3].shape == (3, 2, 1500, 16)
        assert (out[0] - full[:, :3]).abs().max() <= TOL
        past = dict(zip(kv_names(LAYERS, PAST), out[1:]))
        step = DecoderWithPast(model).eval()
        for t in range(3, ids.shape[1]):
            logits, *own = step(ids[:, t: t + 1], torch.full((3, 1), t), **past)
            assert logits.shape == (3, 1, model.config.vocab_size) and own[0].shape == (3, 2, t + 1, 16)
            assert (logits[:, 0] - full[:, t]).abs().max() <= TOL, t
            past.update(zip(kv_names(LAYERS, PAST, cross=False), own))
    if acms:  # the gates chose different k for different tokens: the ACMs' paths were compared
        ks = torch.cat([m.last_k.flatten() for n, m in acm_modules(model) if ".decoder." in n])
        assert len(set(ks.tolist())) > 1


def _greedy(model, features, s, end=None):
    from acmtool.train.greedy_decode import greedy_decode, suppression_of
    return greedy_decode(model, torch.as_tensor(features), s["prompt"], s["end_id"] if end is None else end,
                         s["max_length"] - len(s["prompt"]), *suppression_of(model))


def _end_that_varies(rows: list):
    """A generated token that rows reach first at different steps (or never): made the end id, it
    ends the rows of a batch at different times."""
    for token in sorted({t for r in rows for t in r}):
        if len({r.index(token) for r in rows if token in r}) >= 2:
            return token
    raise AssertionError(f"no token ends these rows at different steps: {rows}")


@pytest.mark.parametrize("fmt", ["custom-op", "standard"])
def test_cached_graphs_decode_and_compute_as_pytorch(acm_whisper, fmt):
    import onnx
    from acmtool.export.seq2seq import DecoderPart, EncoderPart, export_whisper
    from acmtool.runtime.transcribe import Transcriber
    root, model, spec = acm_whisper
    folder = export_whisper(model, root / f"{fmt}.acm.whisper", spec, fmt)
    assert sorted(p.name for p in folder.glob("*.onnx")) == ["decoder_init.onnx", "decoder_with_past.onnx",
                                                             "encoder.onnx"]
    step_graph = onnx.load(str(folder / "decoder_with_past.onnx"), load_external_data=False)
    assert [o.name for o in step_graph.graph.output] == ["logits"] + [
        f"present.{i}.decoder.{kv}" for i in range(LAYERS) for kv in ("key", "value")]
    if fmt == "custom-op":  # every ACM a custom op: per layer the self-attention's 4 projections, fc1 and
        # the cross-attention's q and out; its k and v read the encoder once, in the prompt's graph
        init_graph = onnx.load(str(folder / "decoder_init.onnx"), load_external_data=False)
        assert sum(n.op_type == "DynamicLearners" for n in step_graph.graph.node) == 7 * LAYERS
        assert sum(n.op_type == "DynamicLearners" for n in init_graph.graph.node) == 9 * LAYERS
    cached, whole = Transcriber(folder, threads=1), Transcriber(folder, threads=1, cache=False)
    assert cached.step is not None and whole.step is None
    axes = {i.name: i.shape for i in cached.step.get_inputs()}  # batch, past length and frames are dynamic
    assert axes["past_key_values.1.decoder.key"] == ["batch", 2, "past", 16]
    assert axes["past_key_values.1.encoder.value"] == ["batch", 2, "frames", 16]
    features = _features(4).numpy()
    s = cached.settings
    ids = cached.decode_ids(features)
    assert ids == whole.decode_ids(features) == _greedy(model, features, s)
    assert len({tuple(r) for r in ids}) > 2  # the rows decode differently: the comparison means something
    assert [cached.decode_ids(features[i: i + 1])[0] for i in range(4)] == ids  # batch 1
    # rows that end at different steps: the ended ones are fed the end id, as PyTorch's loop does
    end = _end_that_varies(ids)
    for t in (cached, whole):
        t.settings = {**s, "end_id": end}
    ended = cached.decode_ids(features)
    assert len({len(r) for r in ended}) >= 2
    assert ended == whole.decode_ids(features) == _greedy(model, features, s, end)

    # the logits of every step, the graphs chained on their own keys and values, against PyTorch
    with torch.no_grad():
        hidden = EncoderPart(model).eval()(torch.from_numpy(features))
        teacher = torch.tensor([list(s["prompt"]) + r[:6] for r in ids])
        full = DecoderPart(model).eval()(teacher, hidden).numpy()
    prompt = len(s["prompt"])
    enc = hidden.numpy()
    outs = cached.decoder.run(None, {"decoder_input_ids": teacher[:, :prompt].numpy(), "encoder_hidden_states": enc})
    assert np.abs(outs[0] - full[:, :prompt]).max() <= TOL
    names = [o.name for o in cached.decoder.get_outputs()]
    past = {n.replace("present.", "past_key_values."): v for n, v in zip(names[1:], outs[1:])}
    for t in range(prompt, teacher.shape[1]):
        feeds = {"decoder_input_ids": teacher[:, t: t + 1].numpy(), "position_ids": np.full((4, 1), t, np.int64)}
        logits, *own = cached.step.run(None, {**feeds, **past})
        assert np.abs(logits[:, 0] - full[:, t]).max() <= TOL, t
        past.update({n.replace("present.", "past_key_values."): v for n, v in
                     zip([o.name for o in cached.step.get_outputs()][1:], own)})


def test_a_folder_from_before_the_cache_graphs_still_transcribes(acm_whisper):
    from acmtool.errors import AcmInputError
    from acmtool.export.onnx_export import export_onnx
    from acmtool.export.seq2seq import (DecoderPart, decoder_graphs, eager_attention, example_parts, export_whisper,
                                        verify_whisper)
    from acmtool.runtime.transcribe import Transcriber
    root, model, spec = acm_whisper
    new = root / "custom-op.acm.whisper"
    if not new.is_dir():
        export_whisper(model, new, spec)
    old = root / "old.acm.whisper"  # what export wrote before: the whole-sequence decoder.onnx
    old.mkdir()
    for name in ("encoder.onnx", "transcribe.json", "tokenizer.json"):
        shutil.copy2(new / name, old / name)
    with eager_attention(model):
        export_onnx(DecoderPart(model), old / "decoder.onnx", example_parts(model)[1])
    t = Transcriber(old, threads=1)
    assert t.step is None and decoder_graphs(old) == ["decoder.onnx"]
    features = _features(4).numpy()
    assert t.decode_ids(features) == Transcriber(new, threads=1).decode_ids(features) == \
        _greedy(model, features, t.settings)
    with pytest.raises(AcmInputError, match="no key/value cache graphs"):
        Transcriber(old, cache=True)
    report = verify_whisper(old, model, [{"input_features": _features(2, seed=3)}])
    assert report["passed"] and report["graphs"] == ["encoder", "decoder"] and report["decoder"]["max_abs_diff"] <= TOL
    # half a cache: a clear error, not a fall back to something else
    half = root / "half.acm.whisper"
    shutil.copytree(new, half)
    (half / "decoder_with_past.onnx").unlink()
    with pytest.raises(AcmInputError, match="decoder_init.onnx without decoder_with_past.onnx"):
        Transcriber(half)
    (half / "decoder_init.onnx").unlink()
    with pytest.raises(AcmInputError, match="no decoder graph"):
        Transcriber(half)
