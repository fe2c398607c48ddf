"""Speech to text in ONNX Runtime from an exported Whisper folder (acmtool.export.seq2seq): the
encoder once per batch, then greedy decoding, the same loop as PyTorch's
(acmtool.train.greedy_decode): a fixed prompt, argmax, the model's suppressed tokens. The decoder
runs with its key/value cache (decoder_init.onnx for the prompt, then decoder_with_past.onnx one
token a step) where the folder has those graphs; a folder exported before them runs decoder.onnx
on the whole sequence at every step."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from acmtool.errors import AcmInputError
from acmtool.export.seq2seq import decoder_graphs, read_settings
from acmtool.runtime.session import session
from acmtool.train.greedy_decode import take_step


def _has_budget(sess) -> bool:
    # the budget input has the trained budget as its default: an initializer that may be fed
    return "budget" in {i.name for i in sess.get_overridable_initializers()}


class Transcriber:
    """`Transcriber(folder)(["a.wav", ...])` -> the texts. budget: the ACMs' run-time budget (the
    graphs' `budget` input; None: the trained one). cache: decode with the key/value cache graphs
    (None: where the folder has them; False: the whole sequence at every step, with decoder.onnx or,
    in a folder of cache graphs, decoder_init.onnx, whose logits cover every position)."""

    def __init__(self, folder, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 cache: Optional[bool] = None):
        from tokenizers import Tokenizer
        self.folder = Path(folder)
        self.settings = read_settings(self.folder)
        for name in ("encoder.onnx", "tokenizer.json"):
            if not (self.folder / name).is_file():
                raise AcmInputError(f"{self.folder}: no {name}; export the folder again (acmtool export CHECKPOINT)")
        graphs = decoder_graphs(self.folder)
        if cache and len(graphs) == 1:
            raise AcmInputError(f"{self.folder} has no key/value cache graphs (exported before them); export it "
                                f"again (acmtool export CHECKPOINT --force), or decode without the cache")
        self.encoder = session(self.folder / "encoder.onnx", providers, threads)
        # the graph that takes the whole sequence; with the cache, it runs the prompt
        self.decoder = session(self.folder / graphs[0], providers, threads)
        cached = len(graphs) == 2 and cache is not False  # None: where the folder has them
        self.step = session(self.folder / graphs[1], providers, threads) if cached else None
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.extractor = self._extractor()

    def _extractor(self):
        from transformers import WhisperFeatureExtractor
        s = self.settings
        if (self.folder / "preprocessor_config.json").is_file():
            return WhisperFeatureExtractor.from_pretrained(str(self.folder), local_files_only=True)
        return WhisperFeatureExtractor(feature_size=int(s["num_mel_bins"]), sampling_rate=int(s["sampling_rate"]))

    def features(self, paths: Sequence) -> np.ndarray:
        """[batch, n_mels, frames] float32 log-mel features of the audio files."""
        from acmtool.data.audio_read import read_audio
        rate = int(self.settings["sampling_rate"])
        out = []
        for p in paths:
            wave = read_audio(p, rate)
            if len(wave) > self.extractor.n_samples:
                raise AcmInputError(f"{p}: {len(wave) / rate:.1f} s of audio, longer than the "
                                    f"{self.extractor.n_samples / rate:g} s the model hears at once; cut it into clips")
            out.append(self.extractor(wave, sampling_rate=rate, return_tensors="np")["input_features"][0])
        return np.stack(out).astype(np.float32)

    def _feeds(self, sess, feeds: dict, budget: Optional[float]) -> dict:
        # a graph whose ACMs all run dense (static, or the dense fallback) has no budget input
        if budget is not None and _has_budget(sess):
            feeds = {**feeds, "budget": np.array(budget, dtype=np.float32)}
        return feeds

    def _sessions(self) -> list:
        return [g for g in (self.encoder, self.decoder, self.step) if g is not None]

    def check_budget(self, budget: Optional[float]) -> None:
        if budget is not None and not any(_has_budget(g) for g in self._sessions()):
            raise AcmInputError(f"{self.folder}: this model has no budget input (a static model, or every ACM "
                                f"exported dense); leave --budget out")

    def budget_range(self) -> tuple[float, float]:
        """The lowest and highest budget the graphs' budget tables hold (their ONNX metadata)."""
        import json
        self.check_budget(1.0)
        sess = next(g for g in self._sessions() if _has_budget(g))
        low, high = json.loads(sess.get_modelmeta().custom_metadata_map["acmtool.budget"])["range"]
        return float(low), float(high)

    def decode_ids(self, features: np.ndarray, budget: Optional[float] = None) -> list:
        """Greedy decoding of a batch of features: each row's generated ids (prompt and end left out)."""
        s = self.settings
        self.check_budget(budget)
        hidden = self.encoder.run(None, self._feeds(self.encoder, {"input_features": features}, budget))[0]
        batch, prompt, end = features.shape[0], list(s["prompt"]), int(s["end_id"])
        tokens = np.array([prompt] * batch, dtype=np.int64)
        logits_of = (_Cached if self.step is not None else _Whole)(self, hidden, budget)
        done, out = [False] * batch, [[] for _ in range(batch)]
        for step in range(int(s["max_length"]) - len(prompt)):
            logits = logits_of(tokens)
            banned = s["suppress_at_begin"] if step == 0 else s["suppress"]
            if step == 0:
                banned = sorted(set(banned) | set(s["suppress"]))
            if banned:
                logits[:, banned] = -np.inf
            next_ids = logits.argmax(-1)
            if take_step(next_ids.tolist(), end, done, out):
                break
            # ended rows are fed the end token, as in PyTorch's loop; what follows is never read
            next_ids = np.where(done, end, next_ids)
            tokens = np.concatenate([tokens, next_ids[:, None].astype(np.int64)], axis=1)
        return out

    def text(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True).strip()

    def __call__(self, paths: Sequence, budget: Optional[float] = None, batch_size: int = 8) -> list:
        texts = []
        for i in range(0, len(paths), batch_size):
            chunk = list(paths[i: i + batch_size])
            texts += [self.text(ids) for ids in self.decode_ids(self.features(chunk), budget)]
        return texts


class _Whole:
    """The last position's logits [batch, vocab] of the whole sequence, run again at every step."""

    def __init__(self, t: Transcriber, hidden: np.ndarray, budget: Optional[float]):
        self.t, self.hidden, self.budget = t, hidden, budget
        self.logits = t.decoder.get_outputs()[0].name  # the other outputs (a cache graph's keys) are not read

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        feeds = self.t._feeds(self.t.decoder, {"decoder_input_ids": tokens, "encoder_hidden_states": self.hidden},
                              self.budget)
        return self.t.decoder.run([self.logits], feeds)[0][:, -1, :].astype(np.float32)


class _Cached:
    """The same logits with the key/value cache: the prompt through decoder_init.onnx, then each
    new token (the sequence's last) through decoder_with_past.onnx with the keys and values so far."""

    def __init__(self, t: Transcriber, hidden: np.ndarray, budget: Optional[float]):
        self.t, self.hidden, self.budget = t, hidden, budget
        self.past: dict = {}  # past_key_values.* -> the latest present.*

    def _keep(self, sess, outputs: list) -> np.ndarray:
        names = [o.name for o in sess.get_outputs()]
        self.past.update({n.replace("present.", "past_key_values.", 1): v for n, v in zip(names, outputs)
                          if n.startswith("present.")})
        return outputs[0][:, -1, :].astype(np.float32)

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        t = self.t
        if not self.past:
            feeds = {"decoder_input_ids": tokens, "encoder_hidden_states": self.hidden}
            return self._keep(t.decoder, t.decoder.run(None, t._feeds(t.decoder, feeds, self.budget)))
        position = tokens.shape[1] - 1
        feeds = {"decoder_input_ids": tokens[:, -1:], "position_ids": np.full((tokens.shape[0], 1), position, np.int64),
                 **self.past}
        return self._keep(t.step, t.step.run(None, t._feeds(t.step, feeds, self.budget)))
