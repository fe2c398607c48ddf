"""Two classifiers on the same test images: the accuracy difference and its paired standard error.

Both models see the same 10k images, so what decides whether a difference is real is how many
images one gets right and the other wrong (McNemar): sigma = sqrt(a_only + b_only - (a_only -
b_only)^2 / n) / n. Far smaller than the +-0.35 points of one accuracy on its own. The formula
lives in acmtool.train.paired (acmtool eval --baseline reports it too).
"""
from __future__ import annotations

import torch

from acmtool.data.length_batches import eval_loader
from acmtool.io.checkpoint import load
from acmtool.io.sources import load_original
from acmtool.train.evaluate import collect
from acmtool.train.paired import paired_accuracy_difference


def correct(path, data: str, split: str = "test") -> torch.Tensor:
    """Per test sample: whether the checkpoint's top-1 class is the label."""
    from acmtool.data import load_data
    model = load(path)
    info = model.acmtool_info
    task = load_data(data, load_original(info["source"]), info["source"], seed=0)
    dataset = task.test if split == "test" else task.val
    got = collect(model, eval_loader(dataset, 256, task.collate, task.kind), "cpu", f"paired {split}")
    if got["kind"] != "logits":
        raise ValueError(f"{path}: paired accuracy needs a classifier")
    return got["outputs"].argmax(-1) == got["labels"]


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> dict:
    """acc(a) - acc(b), its standard error (as "sigma" and "se"), and the images only one of them gets right."""
    r = paired_accuracy_difference(a, b)
    return {**r, "sigma": r["se"]}
