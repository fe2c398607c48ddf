"""Whisper in ONNX Runtime: the real-time factor (seconds of compute per second of audio, lower is
faster) of the ACM model against the dense model, its static baseline and faster-whisper, on the
same utterances. (`acmtool verify FOLDER CHECKPOINT --data asterisk` gives the share of utterances
whose ONNX Runtime transcript is PyTorch's.)

    python -m benchmarks.speech --model ACM.acm.safetensors [--static STATIC.acm.safetensors]
        [--data asterisk] [--utterances 40] [--rounds 3] [--threads 2] [--work DIR]

Every engine transcribes one utterance at a time (batch 1, greedy, no timestamps); per round the
engines run each utterance in a rotating order, so that a slow moment of the machine hits them
alike; an engine's RTF is its total time over the total audio, the median over rounds. The
encoder alone is timed the same way (ACM encoder time / dense encoder time). The ONNX engines
decode with the key/value cache (decoder_init.onnx, then decoder_with_past.onnx a token a step);
`dense-nocache` and `acm-nocache` run the same folders on the whole sequence at every step, which
is what the cache saves (`--no-uncached` leaves them out). A folder exported before the cache
graphs is exported again into --work. faster-whisper (CTranslate2, int8 or fp32 as it loads by
default on CPU) runs when installed and the model came from a ct2: folder; otherwise the reason is
printed.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from acmtool.io.outputs import checkpoint_stem

WORK = Path.home() / ".cache" / "acmtool" / "speech"


def has_cache(folder: Path) -> bool:
    """Does the folder hold the key/value cache graphs (not only an older export's decoder.onnx)?"""
    from acmtool.export.seq2seq import decoder_graphs
    return len(decoder_graphs(folder)) == 2


def dense_folder(checkpoint: Path, work: Path) -> Path:
    """The original Whisper (no ACM) exported the same way: the baseline of every ratio."""
    from acmtool.export.seq2seq import export_whisper
    from acmtool.io.checkpoint import read_info
    from acmtool.io.sources import load_original
    spec = read_info(checkpoint)["source"]
    folder = work / f"{checkpoint_stem(checkpoint).name}-dense.acm.whisper"
    if not folder.is_dir() or not has_cache(folder):
        export_whisper(load_original(spec).eval(), folder, spec, force=True)
    return folder


def acm_folder(checkpoint: Path, work: Path) -> Path:
    """The checkpoint's exported folder beside it; exported into `work` when it is missing there or
    older than the cache graphs (the folder beside the checkpoint is left as it is)."""
    from acmtool.export.onnx_export import export_checkpoint
    from acmtool.export.seq2seq import whisper_folder
    folder = whisper_folder(checkpoint)
    if not folder.is_dir():
        return export_checkpoint(checkpoint)
    if has_cache(folder):
        return folder
    again = work / folder.name
    return again if again.is_dir() and has_cache(again) else export_checkpoint(checkpoint, again, force=True)


def utterances(checkpoint: Path, data: str, count: int) -> list:
    """(path, seconds) of the held-out utterances of the checkpoint's conversion split."""
    from acmtool.data import load_data
    from acmtool.io.checkpoint import read_info
    from acmtool.io.sources import load_original
    from acmtool.train.evaluate_checkpoint import split_options
    info = read_info(checkpoint)
    model = load_original(info["source"])
    task = load_data(data, model, info["source"], **split_options(info))
    import soundfile as sf
    paths = [task.val.dataset.paths[i] for i in task.val.indices][:count]
    return [(p, sf.info(p).duration) for p in paths]


def faster_whisper_engine(checkpoint: Path, threads: int):
    """(engine, reason): a faster-whisper model on the checkpoint's ct2 folder, or why there is none."""
    from acmtool.io.checkpoint import read_info
    spec = read_info(checkpoint)["source"]
    if spec.get("kind") != "ct2":
        return None, "the model did not come from a CTranslate2 folder"
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        return None, "pip install faster-whisper to compare with it"
    model = WhisperModel(spec["path"], device="cpu", cpu_threads=threads)

    def run(path):
        segments, _ = model.transcribe(path, beam_size=1, language="en", without_timestamps=True,
                                       condition_on_previous_text=False, vad_filter=False)
        return " ".join(s.text.strip() for s in segments)
    return run, None


def main(argv=None) -> list:
    from acmtool.runtime.transcribe import Transcriber
    about = " ".join(__doc__.split("\n\n")[0].split())  # the first paragraph, not its first line
    p = argparse.ArgumentParser(prog="python -m benchmarks.speech", description=about)
    p.add_argument("--model", type=Path, required=True, help="the ACM checkpoint (NAME.acm.safetensors)")
    p.add_argument("--static", type=Path, default=None, help="its static baseline's checkpoint, timed beside it")
    p.add_argument("--data", default="asterisk", help="the audio: a named dataset or a folder (default: asterisk)")
    p.add_argument("--utterances", type=int, default=40, help="utterances of the test split to time (default: 40)")
    p.add_argument("--rounds", type=int, default=3, help="rounds over them; the median round counts (default: 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads of every engine")
    p.add_argument("--work", type=Path, default=WORK, help=f"where the exported folders go (default: {WORK})")
    p.add_argument("--name", default=None, help="the result files' name (default: the checkpoint's)")
    p.add_argument("--no-uncached", dest="uncached", action="store_false",
                   help="leave out the engines that decode without the key/value cache")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    folders = {"dense": dense_folder(a.model, a.work), "acm": acm_folder(a.model, a.work)}
    if a.static is not None:
        folders["static"] = acm_folder(a.static, a.work)
    ort = {name: Transcriber(f, threads=a.threads) for name, f in folders.items()}
    if a.uncached:  # the same graphs, the whole sequence at every step: what the cache saves
        ort.update({f"{name}-nocache": Transcriber(folders[name], threads=a.threads, cache=False)
                    for name in ("dense", "acm")})
    engines = {name: (lambda path, t=t: t([path])[0]) for name, t in ort.items()}
    fw, why = faster_whisper_engine(a.model, a.threads)
    if fw is not None:
        engines["faster-whisper"] = fw
    else:
        print(f"faster-whisper: not run ({why})")
    clips = utterances(a.model, a.data, a.utterances)
    audio = sum(s for _, s in clips)
    print(f"{len(clips)} utterances, {audio:.1f} s of audio, {a.rounds} rounds, {a.threads} threads")
    names = list(engines)
    total = {n: [] for n in names}
    encoders = [n for n in ort if not n.endswith("-nocache")]  # the same encoder graph as their cached twin
    enc = {n: [] for n in encoders}
    features = {path: ort["dense"].features([path]) for path, _ in clips}
    for r in range(a.rounds):
        spent, spent_enc = dict.fromkeys(names, 0.0), dict.fromkeys(encoders, 0.0)
        for i, (path, _) in enumerate(clips):
            order = names[(i + r) % len(names):] + names[: (i + r) % len(names)]
            for n in order:
                t0 = time.perf_counter()
                engines[n](path)
                spent[n] += time.perf_counter() - t0
            for n in encoders[(i + r) % len(encoders):] + encoders[: (i + r) % len(encoders)]:
                t0 = time.perf_counter()
                ort[n].encoder.run(None, {"input_features": features[path]})
                spent_enc[n] += time.perf_counter() - t0
        for n in names:
            total[n].append(spent[n] / audio)
        for n in encoders:
            enc[n].append(spent_enc[n])
    rows = []
    for n in names:
        rtf = float(np.median(total[n]))
        row = {"engine": n, "rtf": rtf, "vs_dense": rtf / float(np.median(total["dense"]))}
        if n in ort:
            row["cache"] = ort[n].step is not None
        if n.endswith("-nocache"):  # this model's time without the cache over its time with it
            row["vs_cached"] = rtf / float(np.median(total[n[: -len("-nocache")]]))
        if n in enc:
            row["encoder_vs_dense"] = float(np.median(np.array(enc[n]) / np.array(enc["dense"])))
        rows.append(row)
        print(f"{n:15s} RTF {rtf:.4f}  x dense {row['vs_dense']:.3f}" +
              (f"  encoder x dense {row['encoder_vs_dense']:.3f}" if "encoder_vs_dense" in row else "") +
              (f"  x cached {row['vs_cached']:.3f}" if "vs_cached" in row else ""))
    from benchmarks.__main__ import RESULTS, write
    from benchmarks.machine import tag
    stem = RESULTS / f"speech-{a.name or checkpoint_stem(a.model).name}-{tag()}"
    write(rows, stem, {"model": str(a.model), "static": str(a.static) if a.static else None, "data": a.data,
                       "utterances": len(clips), "audio_s": audio, "rounds": a.rounds, "threads": a.threads,
                       "uncached": a.uncached,
                       "faster_whisper": why or "run"})
    print(f"wrote {stem}.json")
    return rows


if __name__ == "__main__":
    main()
