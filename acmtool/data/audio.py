"""Audio DATA: a transcript table or a folder holding one, class subfolders of audio files, or the
named datasets `asterisk` and `pocketsphinx` (acmtool.data.audio_sources), turned into a speech
model's inputs by its own front end (acmtool.data.speech_prep).

Every kept file is decoded once up front (nothing is kept: a bad file stops the run before any
work, and an hour of 16 kHz audio would take 230 MB); items are decoded again, resampled to the
model's rate and turned into features on access. Transcripts are tokenised up front.

Items: ({"input_features": [n_mels, frames]}, label ids as a LongTensor) for transcripts, or an
int class for class folders. AudioCollate stacks them and, for transcripts, pads the labels with
-100 and adds the decoder's inputs (decoder_input_ids, decoder_attention_mask), so that
`model(**inputs)` runs the whole encoder-decoder."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from acmtool.data.audio_read import decode, read_audio
from acmtool.data.audio_sources import (Clips, asterisk_clips, audio_without_images, folder_table, is_audio_table,
                                        list_audio_folder, pocketsphinx_clips, read_transcript_table)
from acmtool.data.resample import resampled_length
from acmtool.data.speech_prep import SpeechPrep, speech_prep
from acmtool.data.split import split_indices, subset_indices
from acmtool.data.task_data import Loaded, TaskData
from acmtool.errors import AcmInputError

AUDIO_DATASETS = ("asterisk", "pocketsphinx")
IGNORE_INDEX = -100  # label padding that Hugging Face's losses skip


class AudioClips(Dataset):
    """Audio files decoded, resampled and featurised on access; targets are label-id arrays or classes."""

    def __init__(self, paths: list, targets: list, prep: SpeechPrep, note: str = ""):
        self.paths, self.targets, self.prep, self.note = list(paths), list(targets), prep, note

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        inputs = self.prep.features(read_audio(self.paths[i], self.prep.rate))
        target = self.targets[i]
        return inputs, torch.from_numpy(target.astype(np.int64)) if isinstance(target, np.ndarray) else int(target)


class AudioCollate:
    """Batches of AudioClips items. A class, not a closure, so DataLoader workers can pickle it."""

    def __init__(self, decoder_start_id: Optional[int] = None, decoder_pad_id: int = 0, pad_waveforms: bool = False):
        self.decoder_start_id, self.decoder_pad_id, self.pad_waveforms = decoder_start_id, decoder_pad_id, pad_waveforms

    def __call__(self, items):
        inputs = {}
        for key in items[0][0]:
            if key == "attention_mask" and self.pad_waveforms:
                continue  # rebuilt by _pad for the padded batch
            values = [x[key] for x, _ in items]
            inputs[key] = torch.stack(values) if not self.pad_waveforms else self._pad(values, inputs)
        targets = [t for _, t in items]
        if not isinstance(targets[0], torch.Tensor):
            return inputs, torch.tensor(targets, dtype=torch.long)
        longest = max(len(t) for t in targets)
        labels = torch.full((len(items), longest), IGNORE_INDEX, dtype=torch.long)
        for row, t in enumerate(targets):
            labels[row, : len(t)] = t
        if self.decoder_start_id is not None:  # HF's shift_tokens_right; position i predicts labels[i]
            shifted = torch.cat([torch.full((len(items), 1), self.decoder_start_id), labels[:, :-1]], dim=1)
            inputs["decoder_input_ids"] = shifted.masked_fill(shifted == IGNORE_INDEX, self.decoder_pad_id)
            inputs["decoder_attention_mask"] = (labels != IGNORE_INDEX).long()
        return inputs, labels

    @staticmethod
    def _pad(values: list, inputs: dict) -> torch.Tensor:
        longest = max(v.shape[-1] for v in values)
        out = values[0].new_zeros((len(values), *values[0].shape[:-1], longest))
        mask = torch.zeros((len(values), longest), dtype=torch.long)
        for row, v in enumerate(values):
            out[row, ..., : v.shape[-1]] = v
            mask[row, : v.shape[-1]] = 1
        inputs["attention_mask"] = mask
        return out


def checked_lengths(paths: list, rate: int) -> list:
    """Each file's length in samples at `rate`, every file decoded: a bad one is an error now."""
    lengths = []
    for p in paths:
        samples, file_rate = decode(p)
        lengths.append(resampled_length(len(samples), file_rate, rate))
    return lengths


def clips_to_loaded(clips: Clips, prep: SpeechPrep, max_samples: Optional[int], seed: int,
                    checked: bool = False) -> Loaded:
    """The seeded subset of `clips`, checked (decoded, lengths, label lengths), as a Loaded."""
    keep = subset_indices(len(clips.paths), max_samples, seed)
    paths = [clips.paths[i] for i in keep]
    if clips.texts is not None:
        if prep.tokens is None:
            raise AcmInputError("transcripts need a tokenizer; give the model's tokenizer.json")
        targets = [np.asarray(prep.tokens(clips.texts[i]), dtype=np.int32) for i in keep]
        for p, t in zip(paths, targets):
            if prep.max_label_length is not None and len(t) > prep.max_label_length:
                raise AcmInputError(f"{p}: its transcript is {len(t)} tokens, more than the {prep.max_label_length} "
                                    f"the model's decoder takes; cut the clip and its transcript in two")
    else:
        targets = [clips.labels[i] for i in keep]
    lengths = checked_lengths(paths, prep.rate) if not checked else None
    if clips.texts is not None and prep.max_length is not None and lengths is not None:
        for p, n in zip(paths, lengths):
            if n > prep.max_length:  # the front end would cut the audio, not the transcript
                limit = prep.max_length / prep.rate
                raise AcmInputError(f"{p}: {n / prep.rate:.1f} s of audio, longer than the {limit:g} s the model "
                                    f"hears at once; cut it (and its transcript) into shorter clips")
    data = AudioClips(paths, targets, prep, note=clips.note)
    names = clips.class_names
    collate = AudioCollate(prep.decoder_start_id, prep.decoder_pad_id, prep.pad_waveforms)
    transcripts = prep.transcripts() if clips.texts is not None else None
    return Loaded(data, len(names) if names else None, names, "audio", collate, transcripts=transcripts)


# --- the entry points load_data calls ------------------------------------------------------------
def is_audio_source(path: Path) -> bool:
    """A folder with audio files and no images, or with a transcript table of audio paths; or such a
    table itself. Never an error: what is not audio goes to the other loaders, which say what is wrong."""
    if not path.is_dir():
        return is_audio_table(path)
    try:
        table = folder_table(path)
    except AcmInputError:  # several tables: audio only if there is audio beside them
        table = None
    if table is not None and is_audio_table(table):
        return True
    return audio_without_images(path)


def load_audio_source(path: Path, model, spec: dict, max_samples: Optional[int], seed: int,
                      text_column: Optional[str] = None, label_column: Optional[str] = None) -> Loaded:
    """A folder or a transcript table, with the model's own front end."""
    if label_column is not None:
        raise AcmInputError(f"{path}: an audio table holds transcripts (--text-column); for audio classes give one "
                            f"subfolder of audio files per class instead of --label-column")
    clips = list_audio_folder(path, text_column) if path.is_dir() else read_transcript_table(path, text_column)
    prep = speech_prep(model, spec, transcripts=clips.texts is not None)
    return clips_to_loaded(clips, prep, max_samples, seed)


def load_named_audio(name: str, model, spec: dict, max_samples: Optional[int], seed: int) -> Loaded:
    return named_audio(name, speech_prep(model, spec, transcripts=True), max_samples, seed)


def named_audio(name: str, prep: SpeechPrep, max_samples: Optional[int], seed: int) -> Loaded:
    """asterisk or pocketsphinx. asterisk's prompts longer than the model hears at once (Whisper:
    30 s) are left out, and counted in the dataset's note, as are those without audio or speech."""
    if name == "pocketsphinx":
        return clips_to_loaded(pocketsphinx_clips(), prep, max_samples, seed)
    limit = prep.max_length / prep.rate if prep.max_length else None
    clips = asterisk_clips(limit, durations=lambda paths: [n / prep.rate for n in checked_lengths(paths, prep.rate)])
    return clips_to_loaded(clips, prep, max_samples, seed, checked=True)


def load_audio_data(source, prep: SpeechPrep, *, val_fraction: float = 0.1, seed: int = 0,
                    max_samples: Optional[int] = None, text_column: Optional[str] = None) -> TaskData:
    """Audio DATA for any front end, without a model: `source` a folder, a transcript table or
    the name of a named dataset; `prep` from acmtool.data.speech_prep (whisper_prep(extractor,
    tokenizer) for Whisper). Split seeded into train and val as load_data does."""
    name = str(source).strip().lower()
    if name in AUDIO_DATASETS:
        loaded = named_audio(name, prep, max_samples, seed)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise AcmInputError(f"{source}: no such file or folder; give a folder of audio, a transcript table, or "
                                f"one of {', '.join(AUDIO_DATASETS)}")
        clips = list_audio_folder(path, text_column) if path.is_dir() else read_transcript_table(path, text_column)
        loaded = clips_to_loaded(clips, prep, max_samples, seed)
    train, val = split_indices(len(loaded.dataset), val_fraction, seed)
    return TaskData(train=Subset(loaded.dataset, train), val=Subset(loaded.dataset, val),
                    num_classes=loaded.num_classes, class_names=loaded.class_names, kind="audio", source=str(source),
                    collate=loaded.collate, transcripts=loaded.transcripts)
