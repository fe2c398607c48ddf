"""Evaluation: the task metric of the original and the ACM model, the achieved budget overall
and per layer, the histogram of k, and the whole-model FLOPs ratio."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from acmtool.cost import acm_site_path, budget, model_flops
from acmtool.io.call import main_output, run_model
from acmtool.layers.acm import acm_modules
from acmtool.train.loop import to_device
from acmtool.train.probe import LinearProbe


def _token_mask(k: torch.Tensor, mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Count only real tokens where the ACM's tokens line up with the attention mask."""
    if mask is not None and mask.shape == k.shape:
        return mask.bool()
    return None


@torch.no_grad()
def collect(model: nn.Module, loader, device, desc: str, max_batches: Optional[int] = None) -> dict:
    """Main outputs, labels and (for ACM models) per-ACM histograms of k over a loader."""
    model.eval()
    acms = acm_modules(model)
    hist = {n: torch.zeros(m.num_learners + 1, dtype=torch.long) for n, m in acms}
    outs, labels, kind = [], [], None
    for i, (inputs, y) in enumerate(tqdm(loader, desc=desc, unit="batch", leave=False)):
        if max_batches is not None and i >= max_batches:
            break
        inputs = to_device(inputs, device)
        mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
        kind, main = main_output(run_model(model, inputs), mask)
        outs.append(main.float().cpu())
        labels.append(y)
        for n, m in acms:
            if m.last_k is None:
                continue
            k = m.last_k
            sel = _token_mask(k, mask)
            k = k[sel] if sel is not None else k.reshape(-1)
            hist[n] += torch.bincount(k.cpu(), minlength=m.num_learners + 1)
    return {"kind": kind, "outputs": torch.cat(outs) if outs else torch.zeros(0), "labels": torch.cat(labels)
            if labels else torch.zeros(0, dtype=torch.long), "hist": hist}


def budget_report(model: nn.Module, hist: dict, profile: Optional[dict]) -> dict:
    layers, mean_k, tokens = {}, {}, {}
    for name, m in acm_modules(model):
        h = hist[name]
        total = int(h.sum())
        if total == 0:
            continue
        mk = float((h * torch.arange(len(h))).sum()) / total
        mean_k[name] = mk
        tokens[acm_site_path(name)] = total
        layers[name] = {"mean_k": mk, "budget": mk / m.num_learners, "histogram": h.tolist()}
    out = {"achieved_budget": budget(model, mean_k, tokens), "per_layer": layers}
    if profile:
        out["flops"] = model_flops(model, profile, mean_k)
    return out


def metrics(student: dict, teacher: dict, probe_train: Optional[dict]) -> dict:
    """Classifiers: accuracy (with labels) and top-1 agreement; embedding models: cosine
    similarity to the original's embeddings and the frozen probe's accuracy."""
    y = student["labels"]
    labelled = y >= 0
    if student["kind"] == "logits":
        s, t = student["outputs"].argmax(-1), teacher["outputs"].argmax(-1)
        out = {"task": "classification", "top1_agreement": float((s == t).float().mean())}
        if labelled.any():
            out["teacher_accuracy"] = float((t[labelled] == y[labelled]).float().mean())
            out["student_accuracy"] = float((s[labelled] == y[labelled]).float().mean())
        return out
    cos = F.cosine_similarity(student["outputs"], teacher["outputs"], dim=-1)
    out = {"task": "embedding", "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min())}
    if probe_train is not None and labelled.any() and (probe_train["labels"] >= 0).any():
        keep = probe_train["labels"] >= 0
        probe = LinearProbe().fit(probe_train["outputs"][keep], probe_train["labels"][keep])
        out["teacher_probe_accuracy"] = float((probe.predict(teacher["outputs"][labelled]) == y[labelled]).float().mean())
        out["student_probe_accuracy"] = float((probe.predict(student["outputs"][labelled]) == y[labelled]).float().mean())
    return out


def evaluate(student: nn.Module, teacher: nn.Module, val_loader, device, profile: Optional[dict],
             probe_loader=None, teacher_val: Optional[dict] = None) -> tuple[dict, dict]:
    """Returns (report, the teacher's collected outputs, to reuse for another student)."""
    teacher_val = teacher_val or collect(teacher, val_loader, device, "eval original")
    got = collect(student, val_loader, device, "eval ACM")
    probe_train = None
    if got["kind"] == "embedding" and probe_loader is not None:
        probe_train = teacher_val.get("probe_train") or collect(teacher, probe_loader, device, "probe features")
        teacher_val["probe_train"] = probe_train
    report = {**metrics(got, teacher_val, probe_train), **budget_report(student, got["hist"], profile)}
    return report, teacher_val
