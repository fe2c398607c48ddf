"""A folder of images: class subfolders give the labels (sorted names), loose images none."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import Dataset

from acmtool.data.preprocess import ImagePrep, image_prep
from acmtool.data.split import subset_indices
from acmtool.data.task_data import Loaded, StackCollate
from acmtool.errors import AcmInputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")


def _visible_dirs(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(folder: Path) -> tuple[list, list, Optional[list]]:
    """(paths, labels, class names). Labels are -1 and class names None for a flat folder."""
    loose = sorted(p for p in folder.iterdir() if _is_image(p))
    dirs = _visible_dirs(folder)
    class_dirs = [d for d in dirs if any(_is_image(p) for p in d.rglob("*"))]
    if class_dirs and len(class_dirs) < len(dirs):
        # Left out, so the labels are the indices among the folders that hold images.
        empty = ", ".join(d.name for d in dirs if d not in class_dirs)
        warnings.warn(f"{folder}: subfolders without images are not classes: {empty}", stacklevel=3)
    if class_dirs and loose:
        raise AcmInputError(f"{folder} holds both class subfolders and loose images ({loose[0].name}, ...); "
                            f"move the loose images into a class folder or elsewhere")
    if loose:
        return loose, [-1] * len(loose), None
    if not class_dirs:
        raise AcmInputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its class subfolders")
    paths, labels = [], []
    for label, d in enumerate(class_dirs):
        files = sorted(p for p in d.rglob("*") if _is_image(p) and not _hidden_below(p, d))
        paths += files
        labels += [label] * len(files)
    return paths, labels, [d.name for d in class_dirs]


def _hidden_below(path: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(top).parts)


def check_readable(paths: list) -> None:
    """Open each image's header (cheap, no decoding) so a bad file stops the run before training."""
    for p in paths:
        with open_checked(p) as im:
            im.size


@contextlib.contextmanager
def open_checked(path: Path):
    """Image.open with every failure, a decompression bomb included, as a one-line AcmInputError."""
    from PIL import Image, UnidentifiedImageError
    try:
        with warnings.catch_warnings():
            # PIL only warns between MAX_IMAGE_PIXELS and twice that; an image that large is an attack
            # or a mistake either way, and decoding it could take gigabytes.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise AcmInputError(f"{path}: the image claims more than {Image.MAX_IMAGE_PIXELS} pixels (a decompression "
                            f"bomb, or far larger than a model needs); resize or remove it") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise AcmInputError(f"{path}: not a readable image (not an image PIL can read: {type(e).__name__}); "
                            f"remove or replace it") from None
    with im:
        yield im


class ImageFiles(Dataset):
    """Images decoded on access, through the model's preprocessing."""

    def __init__(self, paths: list, labels: list, prep: ImagePrep):
        self.paths, self.labels, self.prep = list(paths), list(labels), prep

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with open_checked(self.paths[i]) as im:
            try:
                x = self.prep(im)
            except OSError as e:  # truncated or corrupt pixel data that the header check let through
                raise AcmInputError(f"{self.paths[i]}: the image could not be decoded ({e}); remove or replace "
                                    f"it") from None
        return x, self.labels[i]


SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def split_folders(folder: Path) -> Optional[dict]:
    """{"train"/"val"/"test": folder} when the folder's subfolders are splits (a train/ one and
    nothing but split names), else None (the subfolders are classes)."""
    dirs = _visible_dirs(folder)
    names = {d.name.lower(): d for d in dirs}
    if "train" not in names or any(n not in SPLIT_NAMES for n in names):
        return None
    return {SPLIT_NAMES[n]: d for n, d in names.items()}


def load_folder(folder: Path, model, spec: dict, max_samples: Optional[int], seed: int) -> Loaded:
    splits = split_folders(folder)
    if splits is not None:
        return _load_splits(folder, splits, model, spec, max_samples, seed)
    paths, labels, class_names = list_images(folder)
    prep = image_prep(model, spec)
    keep = subset_indices(len(paths), max_samples, seed)
    paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
    check_readable(paths)
    num_classes = len(class_names) if class_names else None
    return Loaded(ImageFiles(paths, labels, prep), num_classes, class_names, "image", StackCollate())


def _load_splits(folder: Path, splits: dict, model, spec: dict, max_samples: Optional[int], seed: int) -> Loaded:
    """train/ is the data, val/ the validation split (instead of a random share of train/), test/
    the test set; every split's classes must be train/'s."""
    prep = image_prep(model, spec)
    parts = {}
    for name, d in splits.items():
        paths, labels, class_names = list_images(d)
        keep = subset_indices(len(paths), max_samples, seed)
        paths, labels = [paths[i] for i in keep], [labels[i] for i in keep]
        check_readable(paths)
        parts[name] = (paths, labels, class_names)
    classes = parts["train"][2]
    for name, (_, _, names) in parts.items():
        if names != classes:
            raise AcmInputError(f"{folder}/{splits[name].name}: its classes {(names or ['(none)'])[:4]} are not "
                                f"train/'s {(classes or ['(none)'])[:4]}; every split needs the same class folders")
    num_classes = len(classes) if classes else None
    data = {name: ImageFiles(paths, labels, prep) for name, (paths, labels, _) in parts.items()}
    return Loaded(data["train"], num_classes, classes, "image", StackCollate(), test=data.get("test"),
                  val=data.get("val"))
