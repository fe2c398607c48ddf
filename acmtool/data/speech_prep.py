"""What turns a waveform and its transcript into a speech model's inputs and labels: the model
folder's feature extractor and tokenizer, wrapped in a SpeechPrep.

Whisper: `input_features` [n_mels, 3000] from transformers' WhisperFeatureExtractor (the folder's
preprocessor_config.json, else built from the model's config: num_mel_bins, 16 kHz, 30 s), and
labels as Hugging Face's fine-tuning recipe makes them: the tokens after <|startoftranscript|>
(<|lang|><|transcribe|> for multilingual models, <|notimestamps|>), the text, <|endoftext|>. The
model's decoder_start_token_id (<|startoftranscript|>) is put in front by the collate, as HF's
shift_tokens_right does.

wav2vec2 (a CTC head): `input_values`, the raw waveform from the folder's Wav2Vec2FeatureExtractor
(else built from the config), padded per batch with an attention mask, any length; labels are the
transcript's characters (acmtool.data.ctc_tokens), decoded by collapsing frames, not generated."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from acmtool.data.ctc_tokens import CtcTokens, read_ctc_tokens
from acmtool.data.task_data import Transcripts
from acmtool.errors import AcmInputError

WHISPER_RATE = 16000
# openai-whisper's rule: the multilingual vocabularies have 51865 tokens or more, English-only 51864
MULTILINGUAL_VOCAB = 51865


@dataclass
class SpeechPrep:
    extractor: object  # a transformers SequenceFeatureExtractor
    rate: int  # Hz the extractor wants
    max_length: Optional[int] = None  # samples the model hears whole (Whisper: 30 s); None: any length
    tokens: Optional[Callable[[str], list]] = field(default=None, repr=False)  # transcript -> label ids
    max_label_length: Optional[int] = None
    decoder_start_id: Optional[int] = None  # seq2seq: decoder_input_ids = [start] + labels[:-1]
    decoder_pad_id: int = 0
    pad_waveforms: bool = False  # variable-length inputs (wav2vec2): padded per batch, with a mask

    def transcripts(self) -> Transcripts:
        """The decoding side of `tokens` (a WhisperTokens or CtcTokens), for greedy decoding and the WER."""
        if isinstance(self.tokens, CtcTokens):
            return Transcripts(prompt=(), end_id=-1, max_length=0, decode=self.tokens.text, blank=self.tokens.blank)
        if not isinstance(self.tokens, WhisperTokens):
            raise AcmInputError("transcripts need the model's tokenizer; give the model folder with its tokenizer.json")
        t = self.tokens
        return Transcripts(prompt=(t.start_id, *t.prompt), end_id=t.end_id,
                           max_length=int(self.max_label_length or 448), decode=t.text)

    def features(self, waveform: np.ndarray) -> dict:
        out = self.extractor(waveform, sampling_rate=self.rate, return_tensors="np")
        names = getattr(self.extractor, "model_input_names", None) or list(out)
        return {k: torch.from_numpy(np.asarray(out[k][0])) for k in names if k in out}


class WhisperTokens:
    """A transcript as Whisper label ids (tokenizer.json through `tokenizers`, no transformers)."""

    def __init__(self, tokenizer, multilingual: bool = False, language: str = "en", task: str = "transcribe"):
        self.tokenizer = tokenizer
        wanted = [f"<|{language}|>", f"<|{task}|>"] if multilingual else []
        ids = [self._special(t) for t in ["<|startoftranscript|>"] + wanted + ["<|notimestamps|>", "<|endoftext|>"]]
        self.start_id, self.prompt, self.end_id = ids[0], ids[1:-1], ids[-1]

    def _special(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise AcmInputError(f"the tokenizer has no {token} token; give the model's own tokenizer.json (for a "
                                f"language or task token: check the language code)")
        return i

    def text(self, ids) -> str:
        """Token ids (a transcript's, or decoded ones) as text, special tokens dropped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True).strip()

    def __call__(self, text: str) -> list:
        # Whisper's text tokens start with a space (" He might ..."), as its own outputs do
        ids = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids
        return self.prompt + ids + [self.end_id]


def whisper_prep(extractor, tokenizer=None, *, multilingual: bool = False, language: str = "en",
                 task: str = "transcribe", max_label_length: int = 448) -> SpeechPrep:
    """A SpeechPrep from a WhisperFeatureExtractor and a `tokenizers.Tokenizer` (or a tokenizer.json
    path; None for audio classification)."""
    if isinstance(tokenizer, (str, Path)):
        tokenizer = _read_tokenizer(Path(tokenizer))
    tokens = WhisperTokens(tokenizer, multilingual, language, task) if tokenizer is not None else None
    return SpeechPrep(extractor, int(extractor.sampling_rate), max_length=int(extractor.n_samples), tokens=tokens,
                      max_label_length=max_label_length, decoder_start_id=tokens.start_id if tokens else None,
                      decoder_pad_id=tokens.end_id if tokens else 0)


def speech_prep(model, spec: dict, transcripts: bool) -> SpeechPrep:
    """The SpeechPrep of `model` from the folder it came from (spec["path"]), checked against its config."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type == "wav2vec2":
        return _wav2vec2_prep(model, spec, transcripts)
    if model_type != "whisper":
        raise AcmInputError(f"audio data needs a speech model (Whisper, wav2vec2); this is "
                            f"{'a ' + model_type + ' model' if model_type else 'not a Hugging Face speech model'}")
    folder = _model_folder(spec)
    extractor = _whisper_extractor(folder, config)
    tokenizer = None
    if transcripts:
        if folder is None or not (folder / "tokenizer.json").is_file():
            raise AcmInputError(f"transcripts need the model's tokenizer, and {folder or 'this model'} has no "
                                f"tokenizer.json; use the model folder with its tokenizer.json")
        tokenizer = _read_tokenizer(folder / "tokenizer.json")
        if tokenizer.get_vocab_size() > config.vocab_size:
            raise AcmInputError(f"{folder}/tokenizer.json has {tokenizer.get_vocab_size()} tokens but the model "
                                f"embeds {config.vocab_size}; the tokenizer belongs to another model")
    flag = getattr(getattr(model, "generation_config", None), "is_multilingual", None)
    multilingual = bool(flag) if flag is not None else config.vocab_size >= MULTILINGUAL_VOCAB
    prep = whisper_prep(extractor, tokenizer, multilingual=multilingual,
                        max_label_length=int(config.max_target_positions))
    start = getattr(config, "decoder_start_token_id", None)
    if prep.tokens is not None and start is not None and prep.decoder_start_id != start:
        raise AcmInputError(f"{folder}/tokenizer.json puts <|startoftranscript|> at {prep.decoder_start_id}, the "
                            f"model starts decoding at {start}; the tokenizer belongs to another model")
    if getattr(config, "pad_token_id", None) is not None:
        prep.decoder_pad_id = int(config.pad_token_id)
    return prep


def _model_folder(spec: dict) -> Optional[Path]:
    path = spec.get("path")
    return Path(path) if isinstance(path, str) and Path(path).is_dir() else None


def _wav2vec2_prep(model, spec: dict, transcripts: bool) -> SpeechPrep:
    from transformers import Wav2Vec2FeatureExtractor
    config, folder = model.config, _model_folder(spec)
    tokens = None
    if transcripts:
        if not hasattr(model, "lm_head"):
            raise AcmInputError(f"transcripts need a wav2vec2 model with a CTC head (Wav2Vec2ForCTC); this is a "
                                f"{type(model).__name__}. For audio classes give class subfolders instead")
        if folder is None:
            raise AcmInputError("transcripts need the model's vocabulary; use the model folder with its vocab.json")
        tokens = read_ctc_tokens(folder, int(config.pad_token_id))
        if max(tokens.vocab.values()) >= config.vocab_size:
            raise AcmInputError(f"{folder}/vocab.json has ids up to {max(tokens.vocab.values())} but the model's "
                                f"head has {config.vocab_size}; the vocabulary belongs to another model")
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        extractor = _from_folder(Wav2Vec2FeatureExtractor, folder)
    else:  # the extractor wav2vec2 checkpoints ship: the mask where the feature encoder is layer-normed
        extractor = Wav2Vec2FeatureExtractor(sampling_rate=WHISPER_RATE,
                                             return_attention_mask=config.feat_extract_norm == "layer")
    if extractor.feature_size != 1:
        raise AcmInputError(f"{folder}/preprocessor_config.json gives {extractor.feature_size} features a sample; a "
                            f"wav2vec2 model takes the raw waveform (1); the preprocessor belongs to another model")
    return SpeechPrep(extractor, int(extractor.sampling_rate), tokens=tokens, pad_waveforms=True)


def _from_folder(cls, folder: Path):
    try:
        return cls.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # a damaged JSON or bad values raise anything from ValueError to KeyError
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise AcmInputError(f"{folder}/preprocessor_config.json could not be read ({first}); fix or remove "
                            f"it") from None


def _whisper_extractor(folder: Optional[Path], config):
    from transformers import WhisperFeatureExtractor
    if folder is not None and (folder / "preprocessor_config.json").is_file():
        extractor = _from_folder(WhisperFeatureExtractor, folder)
    else:  # CTranslate2 folders have none: Whisper's fixed front end, sized by the config
        extractor = WhisperFeatureExtractor(feature_size=int(config.num_mel_bins), sampling_rate=WHISPER_RATE)
    frames = 2 * int(config.max_source_positions)  # the encoder's stride-2 convolution halves the frames
    if extractor.feature_size != config.num_mel_bins or extractor.nb_max_frames != frames:
        raise AcmInputError(f"{folder}/preprocessor_config.json gives {extractor.feature_size} mel bins x "
                            f"{extractor.nb_max_frames} frames, the model takes {config.num_mel_bins} x {frames}; "
                            f"the preprocessor belongs to another model")
    return extractor


def _read_tokenizer(path: Path):
    from tokenizers import Tokenizer
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises its own Exception subclass for bad JSON
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise AcmInputError(f"{path}: not a usable tokenizer.json ({first}); give the model's own") from None

