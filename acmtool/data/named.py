"""Named datasets that install offline as Debian packages: fashion-mnist and fortunes."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from acmtool.data.idx import read_idx
from acmtool.data.preprocess import ImagePrep, image_prep
from acmtool.data.split import subset_indices
from acmtool.data.task_data import Loaded, PadCollate, StackCollate
from acmtool.data.text import TokenData, load_tokenizer, pad_id
from acmtool.errors import AcmInputError

# Module attributes, not constants in the functions, so that tests can point them elsewhere.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FORTUNES_DIR = Path("/usr/share/games/fortunes")

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FORTUNES_MIN_ENTRIES = 20  # smaller topics are too few to learn or to measure


class GrayImages(Dataset):
    """[N, H, W] uint8 images, preprocessed on access (60k preprocessed 3x224x224 would not fit)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, prep: ImagePrep):
        self.images, self.labels, self.prep = images, labels, prep

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.prep.from_gray_uint8(self.images[i]), int(self.labels[i])


def fashion_mnist(model, spec: dict, max_samples: Optional[int], seed: int) -> Loaded:
    """The official train file (load_data splits it into train/val) and the t10k file as test;
    max_samples caps each."""
    files = {f"{part}-{kind}": FASHION_MNIST_DIR / f"{part}-{kind}-ubyte.gz"
             for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")}
    missing = [f for f in files.values() if not f.is_file()]
    if missing:
        raise AcmInputError(f"fashion-mnist needs the Debian package dataset-fashion-mnist ({missing[0]} is "
                            f"missing): apt-get install dataset-fashion-mnist")
    prep = image_prep(model, spec)  # refuses a model that takes no images before 30 MB are unpacked
    sets = []
    for part in ("train", "t10k"):
        images, labels = read_idx(files[f"{part}-images-idx3"]), read_idx(files[f"{part}-labels-idx1"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or images.dtype != np.uint8:
            raise AcmInputError(f"{files[part + '-images-idx3']}: unexpected contents (images {images.shape}, "
                                f"labels {labels.shape}); reinstall dataset-fashion-mnist")
        keep = subset_indices(len(images), max_samples, seed)
        sets.append(GrayImages(images[keep], labels[keep].astype(np.int64), prep))
    return Loaded(sets[0], len(FASHION_MNIST_CLASSES), list(FASHION_MNIST_CLASSES), "image", StackCollate(),
                  test=sets[1])


def read_fortunes(folder: Path) -> tuple[list, list, list]:
    """(texts, labels, topics): every topic file (no extension; .dat indexes and .u8 links skipped),
    entries split at lines holding only %, topics with fewer than FORTUNES_MIN_ENTRIES dropped."""
    by_topic = {}
    for f in sorted(folder.iterdir()) if folder.is_dir() else []:
        if f.is_symlink() or not f.is_file() or f.suffix or f.name.startswith("."):
            continue
        try:
            text = f.read_text(encoding="utf-8", errors="replace")  # a stray byte must not lose a topic
        except OSError as e:
            raise AcmInputError(f"{f}: cannot be read ({e.strerror}); reinstall fortunes") from None
        entries = [e.strip() for e in _split_entries(text)]
        by_topic[f.name] = [e for e in entries if e]
    if not by_topic:
        raise AcmInputError(f"fortunes needs the Debian package fortunes (no topic files in {folder}): "
                            f"apt-get install fortunes")
    topics = [t for t in sorted(by_topic) if len(by_topic[t]) >= FORTUNES_MIN_ENTRIES]
    if not topics:
        raise AcmInputError(f"{folder}: no fortune topic has {FORTUNES_MIN_ENTRIES} entries; reinstall fortunes")
    texts, labels = [], []
    for label, topic in enumerate(topics):
        texts += by_topic[topic]
        labels += [label] * len(by_topic[topic])
    return texts, labels, topics


def _split_entries(text: str) -> list:
    entries, current = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(current))
            current = []
        else:
            current.append(line)
    entries.append("\n".join(current))
    return entries


def fortunes(model, spec: dict, max_samples: Optional[int], seed: int, text_max_length: int) -> Loaded:
    if not FORTUNES_DIR.is_dir():
        raise AcmInputError(f"fortunes needs the Debian package fortunes ({FORTUNES_DIR} is missing): "
                            f"apt-get install fortunes")
    tokenizer = load_tokenizer(model, spec)
    texts, labels, topics = read_fortunes(FORTUNES_DIR)
    keep = subset_indices(len(texts), max_samples, seed)
    data = TokenData([texts[i] for i in keep], [labels[i] for i in keep], tokenizer, text_max_length)
    return Loaded(data, len(topics), topics, "text", PadCollate(pad_id(tokenizer)))
