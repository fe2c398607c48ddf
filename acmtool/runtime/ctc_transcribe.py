"""Speech to text in ONNX Runtime from one exported CTC model (wav2vec2; acmtool.export.ctc_meta):
the waveform normalised as its feature extractor does, a batch padded with an attention mask where
the graph takes one, each frame's argmax collapsed and spelled. numpy and onnxruntime only."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from acmtool.errors import AcmInputError
from acmtool.runtime.ctc_text import collapse, frames_of, spell
from acmtool.runtime.model_header import read_header
from acmtool.runtime.session import session

KEY = "acmtool.ctc"  # acmtool.export.ctc_meta.KEY (that module needs torch)


class CtcTranscriber:
    """`CtcTranscriber("m.acm.onnx")(["a.wav", ...])` -> the texts. budget: the ACMs' run-time
    budget (the graph's `budget` input; None: the trained one)."""

    def __init__(self, path, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None):
        self.path = Path(path)
        meta = read_header(self.path).metadata
        if KEY not in meta:
            raise AcmInputError(f"{self.path} is not a CTC speech model exported with its vocabulary (no {KEY} "
                                f"metadata); export a wav2vec2 CTC checkpoint whose model folder has vocab.json")
        s = json.loads(meta[KEY])
        self.chars = {int(i): t for t, i in s["vocab"].items()}
        self.blank, self.delimiter, self.rate = int(s["blank"]), s["delimiter"], int(s["sampling_rate"])
        self.normalize, self.padding_value = bool(s["do_normalize"]), float(s["padding_value"])
        self.convolutions = s["convolutions"]
        self.budget_meta = json.loads(meta["acmtool.budget"]) if "acmtool.budget" in meta else None
        self.sess = session(self.path, providers, threads)
        self.inputs = {i.name for i in self.sess.get_inputs()} | \
            {i.name for i in self.sess.get_overridable_initializers()}

    def budget_range(self) -> tuple[float, float]:
        if self.budget_meta is None:
            raise AcmInputError(f"{self.path}: this model has no budget input (a static model, or every ACM "
                                f"exported dense); leave --budget out")
        low, high = self.budget_meta["range"]
        return float(low), float(high)

    def waveform(self, path) -> np.ndarray:
        """One file as the model's input values: mono at its rate, zero mean and unit variance per
        utterance where its extractor normalises (Wav2Vec2FeatureExtractor's rule, epsilon 1e-7)."""
        from acmtool.data.audio_read import read_audio
        x = read_audio(path, self.rate).astype(np.float32)
        if self.normalize:
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        return x

    def decode_ids(self, waves: list, budget: Optional[float] = None) -> list:
        """Each waveform's collapsed ids from one batch run."""
        longest = max(len(w) for w in waves)
        values = np.full((len(waves), longest), self.padding_value, dtype=np.float32)
        mask = np.zeros((len(waves), longest), dtype=np.int64)
        for row, w in enumerate(waves):
            values[row, : len(w)], mask[row, : len(w)] = w, 1
        if "attention_mask" not in self.inputs and len({len(w) for w in waves}) > 1:
            # a graph without the mask hears padding as audio: one utterance a run keeps it exact
            return [ids for w in waves for ids in self.decode_ids([w], budget)]
        feeds = {"input_values": values}
        if "attention_mask" in self.inputs:
            feeds["attention_mask"] = mask
        if budget is not None:
            if "budget" not in self.inputs:
                self.budget_range()  # the error that says there is no budget input
            feeds["budget"] = np.array(budget, dtype=np.float32)
        logits = self.sess.run(None, feeds)[0]
        best = logits.argmax(-1)
        return [collapse(row[: frames_of(len(w), self.convolutions)], self.blank) for row, w in zip(best, waves)]

    def __call__(self, paths: Sequence, budget: Optional[float] = None, batch_size: int = 8) -> list:
        texts = []
        for i in range(0, len(paths), batch_size):
            waves = [self.waveform(p) for p in paths[i: i + batch_size]]
            texts += [spell(ids, self.chars, self.delimiter) for ids in self.decode_ids(waves, budget)]
        return texts
