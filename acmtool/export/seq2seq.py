"""Whisper checkpoints to ONNX: an encoder graph and the decoder's graphs with a key/value cache in
one folder, with what greedy decoding needs beside them, so that ONNX Runtime transcribes audio as
the PyTorch model does.

    NAME.acm.whisper/
        encoder.onnx    input_features [batch, n_mels, frames] -> output: hidden states [batch, frames / 2, d]
        decoder_init.onnx       the prompt decoder_input_ids [batch, tokens], encoder_hidden_states ->
                                logits [batch, tokens, vocab] and every layer's self- and cross-attention
                                keys and values (acmtool.export.whisper_cache_onnx)
        decoder_with_past.onnx  one new token, its position and those keys and values -> its logits and
                                the self-attention keys and values with its own appended
        transcribe.json the prompt, end, suppressed ids, mel bins and sampling rate (TRANSCRIBE_KEYS)
        tokenizer.json  the model folder's (ids -> text)
        preprocessor_config.json  the model folder's front end, where it has one

Every graph goes through export_onnx, so they carry the custom op (or the standard ops), the budget
input and the dense fallback as a single-graph export does. Folders exported before the cache
graphs hold decoder.onnx instead (decoder_input_ids [batch, tokens], encoder_hidden_states ->
output: logits [batch, tokens, vocab], the whole sequence at every step): they still transcribe
and verify (DecoderPart)."""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from acmtool.errors import AcmInputError
from acmtool.io.atomic import replace_folder
from acmtool.layers.acm import acm_modules

SUFFIX = ".acm.whisper"
TRANSCRIBE_JSON = "transcribe.json"
TRANSCRIBE_KEYS = ("prompt", "end_id", "max_length", "suppress", "suppress_at_begin", "num_mel_bins",
                   "sampling_rate", "vocab_size")


class _Holder(nn.Module):
    """Keeps the parts under the names they have in the whole model (model.encoder...), so that the
    checkpoint's per-ACM figures (dense fallback, metadata) name the same modules."""

    def __init__(self, **parts: nn.Module):
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)


class EncoderPart(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = _Holder(encoder=model.model.encoder)
        self.acmtool_info = getattr(model, "acmtool_info", {})

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(input_features).last_hidden_state


class DecoderPart(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = _Holder(decoder=model.model.decoder)
        self.proj_out = model.proj_out
        self.acmtool_info = getattr(model, "acmtool_info", {})

    def forward(self, decoder_input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        hidden = self.model.decoder(input_ids=decoder_input_ids, encoder_hidden_states=encoder_hidden_states,
                                    use_cache=False).last_hidden_state
        return self.proj_out(hidden)


def is_whisper(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) == "whisper" and hasattr(model, "proj_out")


def whisper_folder(checkpoint) -> Path:
    """NAME.acm.whisper beside NAME.acm.safetensors."""
    from acmtool.io.outputs import onnx_path
    path = onnx_path(checkpoint)
    return path.with_name(path.name[: -len(".acm.onnx")] + SUFFIX)


@contextlib.contextmanager
def eager_attention(model: nn.Module):
    """torch.export traces SDPA's is_causal as a symbolic bool it cannot lower; the eager attention
    computes the same thing with plain ops."""
    config = model.config
    old = getattr(config, "_attn_implementation", None)
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = old


def transcribe_settings(model: nn.Module, source: dict) -> dict:
    """What greedy decoding needs, from the model and its folder's tokenizer (as eval decodes)."""
    from acmtool.data.speech_prep import speech_prep
    from acmtool.train.greedy_decode import suppression_of
    prep = speech_prep(model, source, transcripts=True)
    t = prep.transcripts()
    suppress, at_begin = suppression_of(model)
    return {"prompt": list(t.prompt), "end_id": t.end_id, "max_length": t.max_length, "suppress": suppress,
            "suppress_at_begin": at_begin, "num_mel_bins": int(model.config.num_mel_bins),
            "sampling_rate": int(prep.rate), "vocab_size": int(model.config.vocab_size)}


def example_parts(model: nn.Module, batch: int = 2, tokens: int = 3) -> tuple[dict, dict]:
    """Example inputs of each graph (batch 2 and 3 tokens: torch.export keeps 1 static)."""
    frames = 2 * int(model.config.max_source_positions)
    features = torch.randn(batch, int(model.config.num_mel_bins), frames, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = EncoderPart(model).eval()(features)
    ids = torch.full((batch, tokens), int(model.config.decoder_start_token_id), dtype=torch.long)
    return {"input_features": features}, {"decoder_input_ids": ids, "encoder_hidden_states": hidden}


def export_whisper(model: nn.Module, folder, source: dict, fmt: str = "custom-op", force: bool = False,
                   dense: Optional[dict] = None) -> Path:
    """Write `folder` (NAME.acm.whisper) whole or not at all: built in a private folder beside it and
    renamed into place; an existing one is refused unless force."""
    from acmtool.export.onnx_export import export_onnx
    from acmtool.export.whisper_cache_onnx import export_cached
    folder = Path(folder)
    refuse_folder(folder, force)
    if not is_whisper(model):
        raise AcmInputError(f"{type(model).__name__} is not a Whisper model; only Whisper exports as encoder and "
                            f"decoder graphs")
    settings = transcribe_settings(model, source)
    model = model.eval()
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        with eager_attention(model):
            enc_in, dec_in = example_parts(model)
            part = EncoderPart(model)
            names = {n for n, _ in acm_modules(part)}
            export_onnx(part, tmp / "encoder.onnx", enc_in, fmt,
                        dense={n: c for n, c in (dense or {}).items() if n in names})
            export_cached(model, tmp, dec_in, fmt, dense)
        (tmp / TRANSCRIBE_JSON).write_text(json.dumps(settings, indent=2) + "\n")
        origin = Path(source.get("path", ""))
        shutil.copy2(origin / "tokenizer.json", tmp / "tokenizer.json")  # transcribe_settings checked it
        if (origin / "preprocessor_config.json").is_file():  # the front end, where the folder has its own
            shutil.copy2(origin / "preprocessor_config.json", tmp / "preprocessor_config.json")
        tmp.chmod(0o755)
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def refuse_folder(folder: Path, force: bool) -> None:
    if folder.is_file() or folder.is_symlink():
        raise AcmInputError(f"{folder} is a file; a Whisper model exports to a folder: name a folder "
                            f"(NAME{SUFFIX}) that does not exist")
    if folder.exists() and not force:
        raise AcmInputError(f"{folder} already exists: pass --force to replace it, or choose another output name")


def read_settings(folder) -> dict:
    """transcribe.json of an exported folder, checked: a clear error for anything else."""
    path = Path(folder) / TRANSCRIBE_JSON
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise AcmInputError(f"{folder}: not an exported Whisper folder (no {TRANSCRIBE_JSON}); make one with "
                            f"acmtool export CHECKPOINT") from None
    except (OSError, ValueError) as e:
        raise AcmInputError(f"{path}: not readable JSON ({e})") from None
    missing = [k for k in TRANSCRIBE_KEYS if k not in settings] if isinstance(settings, dict) else list(TRANSCRIBE_KEYS)
    if missing:
        raise AcmInputError(f"{path}: missing {', '.join(missing)}; export the folder again")
    return settings


def decoder_graphs(folder) -> list[str]:
    """The decoder graphs a folder decodes with: the cache graphs, or an older folder's decoder.onnx."""
    from acmtool.export.whisper_cache import INIT_ONNX, STEP_ONNX
    folder = Path(folder)
    cached = [n for n in (INIT_ONNX, STEP_ONNX) if (folder / n).is_file()]
    if len(cached) == 2:
        return cached
    if cached:
        missing = STEP_ONNX if cached == [INIT_ONNX] else INIT_ONNX
        raise AcmInputError(f"{folder}: {cached[0]} without {missing}; export the folder again "
                            f"(acmtool export CHECKPOINT --force)")
    if (folder / "decoder.onnx").is_file():
        return ["decoder.onnx"]
    raise AcmInputError(f"{folder}: no decoder graph ({INIT_ONNX} and {STEP_ONNX}, or decoder.onnx); export the "
                        f"folder again (acmtool export CHECKPOINT --force)")


def verify_whisper(folder, model: nn.Module, batches: list, tolerance: float = 1e-4, providers=None) -> dict:
    """`acmtool verify` for an exported folder: each graph against its PyTorch part, at the budgets
    verify checks (the encoder on the batches' features; the decoder graphs on their decoder tokens
    and the PyTorch encoder's states: decoder_init on the whole sequences, decoder_with_past on each
    of their tokens after the first with the keys and values of those before, an older folder's
    decoder.onnx on the whole sequences), then each utterance's greedy transcript in ONNX Runtime
    against PyTorch's (same ids: `transcripts_same`, a fraction of utterances). The report holds
    each graph's report under its file's stem, and `graphs`, those stems."""
    from acmtool.export.dense_fallback import densified, exported_dense_blocks
    from acmtool.export.verify import verify
    from acmtool.export.whisper_cache_onnx import verify_cached
    from acmtool.runtime.transcribe import Transcriber
    from acmtool.train.greedy_decode import greedy_decode, suppression_of
    folder = Path(folder)
    read_settings(folder)
    graphs = decoder_graphs(folder)
    model = model.eval()
    encoder = EncoderPart(model).eval()
    features = [b["input_features"] for b in batches]
    with torch.no_grad():
        dec_batches = [{"decoder_input_ids": _decoder_ids(b, model), "encoder_hidden_states": encoder(f)}
                       for b, f in zip(batches, features)]
    reports = {"encoder.onnx": verify(folder / "encoder.onnx", encoder, [{"input_features": f} for f in features],
                                      tolerance, providers)}
    if graphs == ["decoder.onnx"]:
        reports["decoder.onnx"] = verify(folder / "decoder.onnx", DecoderPart(model).eval(), dec_batches, tolerance,
                                         providers)
    else:
        reports.update(verify_cached(folder, model, dec_batches, tolerance, providers))
    ort = Transcriber(folder, providers)
    s = ort.settings
    same = total = 0
    with densified(model, list(exported_dense_blocks(folder))):  # the reference as exported
        for f in features:
            mine = ort.decode_ids(f.numpy().astype("float32"))
            ref = greedy_decode(model, f, s["prompt"], s["end_id"], s["max_length"] - len(s["prompt"]),
                                *suppression_of(model))
            same += sum(a == b for a, b in zip(mine, ref))
            total += len(ref)
    share = same / total if total else None
    stems = [n[: -len(".onnx")] for n in reports]
    graphs_passed = all(r["passed"] for r in reports.values())
    return {**dict(zip(stems, reports.values())), "graphs": stems, "transcripts_same": share, "utterances": total,
            "graphs_passed": graphs_passed, "passed": graphs_passed and share == 1.0,
            "max_abs_diff": max(r["max_abs_diff"] for r in reports.values()), "tolerance": tolerance}


def _decoder_ids(batch: dict, model: nn.Module) -> torch.Tensor:
    ids = batch.get("decoder_input_ids")
    if ids is not None:
        return ids
    # random inputs: the start token and a few random ids, seeded
    g = torch.Generator().manual_seed(0)
    rows = batch["input_features"].shape[0]
    start = torch.full((rows, 1), int(model.config.decoder_start_token_id), dtype=torch.long)
    return torch.cat([start, torch.randint(0, int(model.config.vocab_size), (rows, 5), generator=g)], dim=1)


def verify_whisper_line(report: dict) -> str:
    from acmtool.export.verify import verify_line
    share = report["transcripts_same"]
    same = "n/a" if share is None else f"{100 * share:.1f} %"
    stems = report.get("graphs") or ["encoder", "decoder"]
    return "".join(f"{stem}: {verify_line(report[stem])}\n" for stem in stems) + \
        f"greedy transcripts identical to PyTorch's: {same} of {report['utterances']} utterances"
