"""The Whisper decoder-with-past graphs (acmtool.export.whisper_cache) to ONNX and back: export with
their dynamic axes and output names, and `acmtool verify`'s check of both against PyTorch.

    decoder_init.onnx       decoder_input_ids [B, T], encoder_hidden_states [B, F, d] ->
                            logits [B, T, V], present.{i}.decoder.key/value [B, H, T, Dh],
                            present.{i}.encoder.key/value [B, H, F, Dh]
    decoder_with_past.onnx  decoder_input_ids [B, 1], position_ids [B, 1],
                            past_key_values.{i}.decoder.key/value [B, H, P, Dh],
                            past_key_values.{i}.encoder.key/value [B, H, F, Dh] ->
                            logits [B, 1, V], present.{i}.decoder.key/value [B, H, P + 1, Dh]

Both go through export_onnx, so they carry the custom op (or the standard ops), the `budget` input
and the dense fallback as the encoder graph does. Dynamic: B, T, P and F."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from acmtool.export.whisper_cache import (INIT_ONNX, PAST, PRESENT, STEP_ONNX, DecoderInit, DecoderWithPast,
                                          kv_names, step_inputs)
from acmtool.layers.acm import acm_modules

# torch.export keeps an axis of size 1 static, so the examples' past and prompt are longer
EXAMPLE_PAST = 3


def _layers(model: nn.Module) -> int:
    return len(model.model.decoder.layers)


def cache_examples(model: nn.Module, dec_in: dict) -> tuple[dict, dict]:
    """The two graphs' example inputs, from the whole-sequence decoder's (seq2seq.example_parts)."""
    ids, hidden = dec_in["decoder_input_ids"], dec_in["encoder_hidden_states"]
    start = ids[:, :1]
    prompt = start.repeat(1, EXAMPLE_PAST)
    with torch.no_grad():
        kv = DecoderInit(model).eval()(prompt, hidden)[1:]
    return ({"decoder_input_ids": prompt, "encoder_hidden_states": hidden},
            step_inputs(kv, start, EXAMPLE_PAST, _layers(model)))


def dynamic_axes(model: nn.Module) -> tuple[dict, dict]:
    """{input name: {axis: Dim}} of each graph: batch everywhere, the prompt's length, the past's
    length and the encoder's frames."""
    dim = torch.export.Dim
    batch, seq, past, frames = (dim(n, min=1, max=65536) for n in ("batch", "seq", "past", "frames"))
    init = {"decoder_input_ids": {0: batch, 1: seq}, "encoder_hidden_states": {0: batch, 1: frames}}
    step = {"decoder_input_ids": {0: batch}, "position_ids": {0: batch}}
    for name in kv_names(_layers(model), PAST):
        step[name] = {0: batch, 2: frames if ".encoder." in name else past}
    return init, step


def export_cached(model: nn.Module, folder: Path, dec_in: dict, fmt: str, dense: Optional[dict]) -> list:
    """Write INIT_ONNX and STEP_ONNX into `folder`; returns their paths. `model` in eval mode with
    eager attention (as export_whisper holds it)."""
    from acmtool.export.onnx_export import export_onnx
    layers = _layers(model)
    init_in, step_in = cache_examples(model, dec_in)
    init_axes, step_axes = dynamic_axes(model)
    out = []
    for part, name, inputs, axes, outputs in (
            (DecoderInit(model), INIT_ONNX, init_in, init_axes, ["logits"] + kv_names(layers, PRESENT)),
            (DecoderWithPast(model), STEP_ONNX, step_in, step_axes, ["logits"] + kv_names(layers, PRESENT, False))):
        names = {n for n, _ in acm_modules(part)}
        export_onnx(part.eval(), folder / name, inputs, fmt, dense={n: c for n, c in (dense or {}).items() if n in names},
                    axes=axes, output_names=outputs)
        out.append(folder / name)
    return out


@contextlib.contextmanager
def _logits_only(path: Path):
    """A copy of the graph whose one output is the logits: acmtool.export.verify compares the first
    output and reads the gates' K from the outputs after it."""
    import onnx
    from acmtool.export.verify import _probe_path
    proto = onnx.load(str(path), load_external_data=False)
    del proto.graph.output[1:]
    with _probe_path(proto, path) as probe:  # beside the original when its weights are external data
        onnx.save(proto, str(probe))
        yield probe


def step_batches(model: nn.Module, dec_batches: list) -> list:
    """Every step of each teacher-forced sequence as DecoderWithPast's inputs: token t with the
    keys and values PyTorch computes for the tokens before it. One run of the whole sequence gives
    them all (attention is causal: a prefix's keys and values are the first t), and every step of a
    sequence shares its cross-attention tensors (tens of MB each on a real Whisper)."""
    init, layers = DecoderInit(model).eval(), _layers(model)
    names = kv_names(layers, PAST)
    out = []
    with torch.no_grad():
        for b in dec_batches:
            ids, hidden = b["decoder_input_ids"], b["encoder_hidden_states"]
            kv = init(ids, hidden)[1:]
            for t in range(1, ids.shape[1]):
                past = [v[:, :, :t] if ".decoder." in n else v for n, v in zip(names, kv)]
                out.append(step_inputs(past, ids[:, t: t + 1], t, layers))
    return out


def verify_cached(folder: Path, model: nn.Module, dec_batches: list, tolerance: float, providers) -> dict:
    """{graph file: acmtool.export.verify's report}: the prompt graph on the whole teacher-forced
    sequences (every position's logits), the step graph on each of their tokens, at the budgets
    verify checks, with the reference replaying the gates' K that ONNX Runtime chose."""
    from acmtool.export.verify import verify
    init, step = DecoderInit(model).eval(), DecoderWithPast(model).eval()
    reports = {}
    for part, name, batches in ((init, INIT_ONNX, dec_batches), (step, STEP_ONNX, step_batches(model, dec_batches))):
        with _logits_only(Path(folder) / name) as probe:
            reports[name] = verify(probe, part, batches, tolerance, providers)
    return reports
