"""Evaluate a saved ACM checkpoint against its original model, on the split that convert used;
optionally against a baseline checkpoint of the same original, on the same samples."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from acmtool.data.length_batches import eval_loader
from acmtool.errors import AcmInputError
from acmtool.io.checkpoint import load
from acmtool.io.sources import load_original
from acmtool.layers.control import at_budget, budget_shift, set_budget
from acmtool.train.evaluate import compare, evaluate

SPLIT_OPTIONS = {"seed": 0, "val_fraction": 0.1, "max_samples": None}


def split_options(info: dict) -> dict:
    """The options that decided the conversion's train/val split (and subset)."""
    opts = dict(SPLIT_OPTIONS)
    opts.update({k: v for k, v in ((info.get("report") or {}).get("options") or {}).items() if k in opts})
    return opts


def _identity(spec: dict) -> str:
    """What makes two sources the same original: the spec, with a weights file known by its digest
    rather than by where it lies."""
    spec = dict(spec)
    if spec.get("weights_sha256"):
        spec.pop("weights", None)
    if spec.get("kind") in ("file", "ct2"):  # known by the digests of the files read (ct2: per file)
        spec.pop("path", None)
    return json.dumps(spec, sort_keys=True)


def _describe(spec: dict) -> str:
    kind = spec.get("kind")
    name = {"timm": f"timm:{spec.get('name')}", "hf": f"{spec.get('class')} in {spec.get('path')}",
            "file": str(spec.get("path")), "user": str(spec.get("class")),
            "ct2": f"ct2:{spec.get('path')}"}.get(kind, str(kind))
    if spec.get("weights"):
        name += f" with weights {Path(spec['weights']).name}"
    return name


def check_same_original(path, info: dict, baseline, base_info: dict) -> None:
    a, b = info.get("source") or {}, base_info.get("source") or {}
    if _identity(a) != _identity(b):
        da, db = _describe(a), _describe(b)
        how = f"{da} vs {db}" if da != db else f"{da}, with other settings or weights"
        raise AcmInputError(f"--baseline: {baseline} was converted from another original model than {path} ({how}); "
                            f"a paired comparison needs two conversions of the same model")


def check_same_split(path, info: dict, baseline, base_info: dict, max_samples: Optional[int]) -> None:
    """On the validation split both models must have been held out from the same samples."""
    a, b = split_options(info), split_options(base_info)
    if max_samples is not None:  # an explicit cap applies to both
        a["max_samples"] = b["max_samples"] = max_samples
    if a != b:
        diff = ", ".join(f"{k} {a[k]} vs {b[k]}" for k in a if a[k] != b[k])
        raise AcmInputError(f"--baseline: {path} and {baseline} were converted with different data splits ({diff}), "
                            f"so each one's validation samples may be the other's training data; use --split test")


def evaluate_checkpoint(path, data: Optional[str], split: str = "val", batch_size: int = 64,
                        max_samples: Optional[int] = None, device: str = "cpu", baseline=None,
                        test_data: Optional[str] = None, columns: Optional[dict] = None,
                        budgets: Optional[list] = None, budget: Optional[float] = None, refit: bool = True) -> dict:
    """The report of `acmtool eval`. With a baseline checkpoint (same original model), it is
    evaluated on the same samples, the original run once for both: report["baseline"] holds its
    report and report["vs_baseline"] the paired differences (this checkpoint - the baseline).
    test_data: score every sample of that source instead of a split of `data` (which then only
    trains the embedding models' probe, and may be None); columns: text_column / label_column of
    tables; refit=False leaves the refit probe out (one pass over the probe's training data less per
    model and budget)."""
    from acmtool.data import load_data
    if data is None and test_data is None:
        raise AcmInputError("give --data (its validation or test split is scored) or --test-data")
    student = load(path)
    info = student.acmtool_info
    for b in (budgets or []) + ([budget] if budget is not None else []):
        budget_shift(student, b, warn=False)  # before any work: a budget out of range is the user's to fix
    if budget is not None:
        set_budget(student, budget)
    # table columns: as given, else as the conversion was given them
    recorded = (info.get("report") or {}).get("options") or {}
    columns = {k: (columns or {}).get(k) or recorded.get(k) for k in ("text_column", "label_column")}
    other = None
    if baseline is not None:
        other = load(baseline)
        check_same_original(path, info, baseline, other.acmtool_info)
        if split == "val" and test_data is None:
            check_same_split(path, info, baseline, other.acmtool_info, max_samples)
    teacher = load_original(info["source"]).eval()
    # the same split as the conversion: same seed and validation fraction, same subset
    opts = split_options(info)
    if max_samples is not None:
        opts["max_samples"] = max_samples
    task = load_data(data, teacher, info["source"], **opts, **columns) if data is not None else None
    if test_data is not None:  # every sample of it, none held back
        test = load_data(test_data, teacher, info["source"], val_fraction=0.0, seed=opts["seed"],
                         max_samples=max_samples, **columns)
        dataset, kind, collate, split = test.train, test.kind, test.collate, "test-data"
        transcripts = test.transcripts
        if task is not None and task.kind != test.kind:
            raise AcmInputError(f"--test-data {test_data} holds {test.kind} and --data {data} {task.kind}")
    elif split == "test":
        if task.test is None:
            raise AcmInputError(f"{data} has no test set; use --split val, or give --test-data")
        dataset, kind, collate = task.test, task.kind, task.collate
    else:
        dataset, kind, collate = task.val, task.kind, task.collate
    if test_data is None:
        transcripts = task.transcripts
    dev = torch.device(device)
    loader = eval_loader(dataset, batch_size, collate, kind)
    probe = eval_loader(task.train, batch_size, task.collate, task.kind) if task is not None and task.num_classes \
        else None
    report, ev = evaluate(student.to(dev), teacher.to(dev), loader, dev, info.get("flops_profile"), probe_loader=probe,
                          refit=refit, transcripts=transcripts)
    report.update(checkpoint=str(path), data=data, split=split, static=bool(info.get("static")),
                  budget_target=info.get("budget"), test_data=test_data, budget_knob=budget)
    if budgets:
        report["budget_curve"] = []
        for b in budgets:
            with at_budget(student, b):
                at, _ = evaluate(student, teacher, loader, dev, info.get("flops_profile"), probe_loader=probe,
                                 original=ev.original, refit=refit, transcripts=transcripts)
            report["budget_curve"].append({"budget": b, **at})
    if other is not None:
        base_info = other.acmtool_info
        base, base_ev = evaluate(other.to(dev), teacher, loader, dev, base_info.get("flops_profile"),
                                 probe_loader=probe, original=ev.original, refit=refit, transcripts=transcripts)
        base.update(checkpoint=str(baseline), data=data, split=split, static=bool(base_info.get("static")),
                    budget_target=base_info.get("budget"))
        report["baseline"] = base
        report["vs_baseline"] = compare(ev.samples, base_ev.samples)
    return report
