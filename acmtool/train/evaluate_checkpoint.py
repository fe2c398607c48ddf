"""Evaluate a saved ACM checkpoint against its original model, on the split that convert used."""
from __future__ import annotations

from typing import Optional

import torch

from acmtool.data.length_batches import eval_loader
from acmtool.errors import AcmInputError
from acmtool.io.checkpoint import load
from acmtool.io.sources import load_original
from acmtool.train.evaluate import evaluate


def evaluate_checkpoint(path, data: str, split: str = "val", batch_size: int = 64,
                        max_samples: Optional[int] = None, device: str = "cpu") -> dict:
    from acmtool.data import load_data
    student = load(path)
    info = student.acmtool_info
    teacher = load_original(info["source"]).eval()
    trained = (info.get("report") or {})
    # the same split as the conversion: same seed and validation fraction, same subset
    opts = {"seed": 0, "val_fraction": 0.1, "max_samples": None}
    opts.update({k: v for k, v in (trained.get("options") or {}).items() if k in opts})
    if max_samples is not None:
        opts["max_samples"] = max_samples
    task = load_data(data, teacher, info["source"], **opts)
    if split == "test":
        if task.test is None:
            raise AcmInputError(f"{data} has no test set; use --split val")
        dataset = task.test
    else:
        dataset = task.val
    dev = torch.device(device)
    loader = eval_loader(dataset, batch_size, task.collate, task.kind)
    probe = eval_loader(task.train, batch_size, task.collate, task.kind) if task.num_classes else None
    report, _ = evaluate(student.to(dev), teacher.to(dev), loader, dev, info.get("flops_profile"), probe_loader=probe)
    report.update(checkpoint=str(path), data=data, split=split, static=bool(info.get("static")),
                  budget_target=info.get("budget"))
    return report
