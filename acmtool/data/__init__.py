"""DATA for the conversion pipeline: a folder of images or audio, a .npz, a text file, or a named dataset.

    data = load_data(source, model, spec, val_fraction=0.1, seed=0, max_samples=None)
    loader = DataLoader(data.train, batch_size=32, collate_fn=data.collate)
    for inputs, labels in loader: model(**inputs) if isinstance(inputs, dict) else model(inputs)

Cheap to import: torchvision, timm and transformers load inside the loaders that need them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Subset

from acmtool.data.split import split_indices, subset_indices
from acmtool.data.task_data import Loaded, PadCollate, StackCollate, TaskData
from acmtool.errors import AcmInputError

NAMED_DATASETS = ("asterisk", "fashion-mnist", "fortunes", "pocketsphinx")
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")  # acmtool.data.tables
FILE_KINDS = ("a folder of images (class subfolders give labels), a .npz with x (and y), a .txt file, a .csv/.tsv/"
              ".jsonl/.parquet table of text (and labels), a datasets folder, audio files with a transcript table "
              "(path, text) or in class subfolders")

__all__ = ["NAMED_DATASETS", "PadCollate", "StackCollate", "TaskData", "load_data", "split_indices",
           "subset_indices"]


def load_data(source: str, model: torch.nn.Module, spec: dict, *, val_fraction: float = 0.1, seed: int = 0,
              max_samples: Optional[int] = None, text_max_length: int = 128, text_column: Optional[str] = None,
              label_column: Optional[str] = None, tokenizer=None, transform=None) -> TaskData:
    """Read DATA for `model` (built from `spec`, see acmtool.io.sources), split it seeded into train
    and val. Every problem with the input is an AcmInputError raised before the data is processed.
    text_column / label_column: the columns of a table (acmtool.data.tables; guessed when None).
    A source that is not a path or a name is data as Python objects (acmtool.data.python_data, which
    tokenizer and transform are for)."""
    _check_options(val_fraction, seed, max_samples, text_max_length)
    if not isinstance(source, (str, os.PathLike)):
        from acmtool.data.python_data import from_python
        loaded = from_python(source, tokenizer=tokenizer, transform=transform, max_samples=max_samples, seed=seed,
                             max_length=text_max_length, text_column=text_column, label_column=label_column)
        source = f"<{type(source).__name__} from Python>"
    else:
        columns = {"text_column": text_column, "label_column": label_column}
        loaded = _load(str(source), model, spec or {}, max_samples, seed, text_max_length, columns)
    if len(loaded.dataset) == 0:
        raise AcmInputError(f"{source}: no samples in it")
    if loaded.val is not None:  # the source has its own validation set
        n = len(loaded.dataset)
        return TaskData(train=Subset(loaded.dataset, list(range(n))), val=loaded.val,
                        num_classes=loaded.num_classes, class_names=loaded.class_names, kind=loaded.kind,
                        source=str(source), collate=loaded.collate, test=loaded.test,
                    transcripts=loaded.transcripts)
    train, val = split_indices(len(loaded.dataset), val_fraction, seed)
    return TaskData(train=Subset(loaded.dataset, train), val=Subset(loaded.dataset, val),
                    num_classes=loaded.num_classes, class_names=loaded.class_names, kind=loaded.kind,
                    source=str(source), collate=loaded.collate, test=loaded.test,
                    transcripts=loaded.transcripts)


def _load(source: str, model, spec: dict, max_samples, seed: int, text_max_length: int, columns: dict) -> Loaded:
    given = [f"--{k.replace('_', '-')}" for k, v in columns.items() if v is not None]
    if given and Path(source).suffix.lower() not in TABLE_SUFFIXES and not _is_datasets_folder(source):
        raise AcmInputError(f"{' and '.join(given)} name columns of a .csv, .tsv, .jsonl or .parquet table or a "
                            f"datasets folder; {source} is none of these")
    name = source.strip().lower()
    if name == "fashion-mnist":
        from acmtool.data.named import fashion_mnist
        return fashion_mnist(model, spec, max_samples, seed)
    if name == "fortunes":
        from acmtool.data.named import fortunes
        return fortunes(model, spec, max_samples, seed, text_max_length)
    if name in ("asterisk", "pocketsphinx"):
        from acmtool.data.audio import load_named_audio
        return load_named_audio(name, model, spec, max_samples, seed)
    path = Path(source).expanduser()
    if not path.exists():
        if "/" not in source and not path.suffix:  # looks like a dataset name, not a path
            raise AcmInputError(f"unknown dataset {source!r}; the named datasets are "
                                f"{', '.join(NAMED_DATASETS)}; or give {FILE_KINDS}")
        raise AcmInputError(f"{source}: no such file or folder; give {FILE_KINDS}, or a named dataset "
                            f"({', '.join(NAMED_DATASETS)})")
    if _is_datasets_folder(source):
        from acmtool.data.tables import load_datasets_folder
        return load_datasets_folder(path, model, spec, max_samples, seed, text_max_length, **columns)
    from acmtool.data.audio import is_audio_source, load_audio_source
    if path.is_dir() and is_audio_source(path):
        return load_audio_source(path, model, spec, max_samples, seed, **columns)
    if path.is_dir():
        from acmtool.data.images import load_folder
        return load_folder(path, model, spec, max_samples, seed)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES and is_audio_source(path):
        return load_audio_source(path, model, spec, max_samples, seed, **columns)
    if suffix in TABLE_SUFFIXES:
        from acmtool.data.tables import load_table
        return load_table(path, model, spec, max_samples, seed, text_max_length, **columns)
    if suffix == ".npz":
        from acmtool.data.arrays import load_npz
        return load_npz(path, max_samples, seed)
    if suffix == ".txt":
        from acmtool.data.text import load_text_file
        return load_text_file(path, model, spec, max_samples, seed, text_max_length)
    raise AcmInputError(f"{source}: acmtool does not read {suffix or 'extension-less'} files as data; give "
                        f"{FILE_KINDS}, or a named dataset ({', '.join(NAMED_DATASETS)})")


def _is_datasets_folder(source: str) -> bool:
    """A Hugging Face datasets folder (save_to_disk): dataset_dict.json, or state.json beside .arrow files."""
    path = Path(source).expanduser()
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise AcmInputError(f"{path}: not a regular file; give {FILE_KINDS}")
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as e:
        raise AcmInputError(f"{path}: cannot be read ({e.strerror}); check its permissions") from None
    if size == 0:
        raise AcmInputError(f"{path}: the file is empty")


def _check_options(val_fraction: float, seed: int, max_samples, text_max_length: int) -> None:
    if not 0 <= val_fraction < 1:
        raise AcmInputError(f"val_fraction {val_fraction}: must be at least 0 and below 1")
    if max_samples is not None and (isinstance(max_samples, bool) or int(max_samples) != max_samples
                                    or max_samples < 1):
        raise AcmInputError(f"max_samples {max_samples}: must be a positive whole number")
    if text_max_length < 2:
        raise AcmInputError(f"text_max_length {text_max_length}: must be at least 2 (room for the special tokens)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AcmInputError(f"seed {seed!r}: must be a whole number >= 0")
