"""Evaluation: the task metric of the original and the ACM model, each difference with its paired
standard error, the achieved budget overall and per layer, the histogram of k, and the
whole-model FLOPs ratio."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from acmtool.cost import acm_site_path, budget, model_flops
from acmtool.data.task_data import Transcripts
from acmtool.io.call import main_output, per_token, run_model, token_mask
from acmtool.layers.acm import acm_modules
from acmtool.train.loop import to_device
from acmtool.train.paired import paired_accuracy_difference, paired_mean_difference
from acmtool.train.probe import LinearProbe
from acmtool.train.wer_eval import paired_wer, transcribe_batch, wer


def _token_mask(k: torch.Tensor, mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Count only real tokens where the ACM's tokens line up with the attention mask."""
    if mask is not None and mask.shape == k.shape:
        return mask.bool()
    return None


@torch.no_grad()
def collect(model: nn.Module, loader, device, desc: str, max_batches: Optional[int] = None,
            transcripts: Optional[Transcripts] = None) -> dict:
    """Main outputs, labels and (for ACM models) per-ACM histograms of k over a loader. A decoder's
    per-token outputs and labels come one row per real token. With transcripts (speech), also each
    utterance's word errors, greedy-decoded (the budget is the one of the teacher-forced pass)."""
    model.eval()
    acms = acm_modules(model)
    hist = {n: torch.zeros(m.num_learners + 1, dtype=torch.long) for n, m in acms}
    outs, labels, kind, errors = [], [], None, []
    for i, (inputs, y) in enumerate(tqdm(loader, desc=desc, unit="batch", leave=False)):
        if max_batches is not None and i >= max_batches:
            break
        inputs = to_device(inputs, device)
        mask = token_mask(inputs, model)
        kind, main = main_output(run_model(model, inputs), mask)
        outs.append(main.float().cpu())
        if transcripts is not None and transcripts.blank is not None:
            labels.append(torch.full((len(main),), -1, dtype=torch.long))  # CTC: no label per frame
        else:
            labels.append(per_token(y, mask) if y.dim() == 2 else y)
        for n, m in acms:
            if m.last_k is None:
                continue
            k = m.last_k
            sel = _token_mask(k, mask)
            k = k[sel] if sel is not None else k.reshape(-1)
            hist[n] += torch.bincount(k.cpu(), minlength=m.num_learners + 1)
        if transcripts is not None:
            errors.append(transcribe_batch(model, inputs, y, transcripts)[0])
    got = {"kind": kind, "outputs": torch.cat(outs) if outs else torch.zeros(0), "labels": torch.cat(labels)
           if labels else torch.zeros(0, dtype=torch.long), "hist": hist}
    if transcripts is not None:
        got["word_errors"] = torch.cat(errors) if errors else torch.zeros(0, 2, dtype=torch.long)
    return got


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
        layers[name] = {"mean_k": mk, "budget": mk / m.num_learners, "histogram": h.tolist(),
                        "k0_share": float(h[0]) / total}
    out = {"achieved_budget": budget(model, mean_k, tokens), "per_layer": layers}
    # an encoder-decoder's two halves see different tokens (Whisper: 1500 frames, a few words)
    parts = {part: {n: k for n, k in mean_k.items() if f".{part}." in f".{n}."} for part in ("encoder", "decoder")}
    if all(parts.values()):
        out["part_budgets"] = {part: budget(model, ks, tokens) for part, ks in parts.items()}
    # how often a gate says "this token needs none of this block" (MLPs only: projections keep k >= 1)
    k0 = [(int(hist[n][0]), int(hist[n].sum())) for n, m in acm_modules(model) if m.min_k == 0 and n in layers]
    if k0:
        out["k0_share"] = sum(a for a, _ in k0) / max(sum(b for _, b in k0), 1)
    if profile:
        out["flops"] = model_flops(model, profile, mean_k)
    return out


@dataclass
class Original:
    """The original model's side of an evaluation, computed once and reused for every model
    evaluated on the same samples: its outputs, its features on the probe's training data, the
    drop-in probe fitted on them, and its per-sample results (see per_sample)."""
    outputs: dict
    probe_train: Optional[dict] = None
    probe: Optional[LinearProbe] = None
    samples: dict = field(default_factory=dict)


@dataclass
class Evaluation:
    """One model's evaluation: the report, its per-sample results (to pair against any other model
    evaluated on the same samples, with compare) and the original's side, to reuse."""
    report: dict
    samples: dict
    original: Original


def _fit_probe(features: Optional[dict]) -> Optional[LinearProbe]:
    if features is None or not (features["labels"] >= 0).any():
        return None
    keep = features["labels"] >= 0
    return LinearProbe().fit(features["outputs"][keep], features["labels"][keep])


def original_side(teacher: dict, probe_train: Optional[dict] = None) -> Original:
    """The original's per-sample results: for classifiers whether it gets each labelled sample
    right; for embedding models the drop-in probe (fitted on its own features, so also its refit
    probe) on each labelled sample, and cosine 1 with itself."""
    y = teacher["labels"]
    labelled = y >= 0
    samples = {}
    probe = None
    if "word_errors" in teacher:
        samples["word_errors"] = teacher["word_errors"]
    if teacher["kind"] == "logits":
        samples["agrees"] = torch.ones(len(y), dtype=torch.bool)
        if labelled.any():
            samples["correct"] = teacher["outputs"].argmax(-1)[labelled] == y[labelled]
    else:
        samples["cosine"] = torch.ones(len(y), dtype=torch.float64)
        probe = _fit_probe(probe_train) if labelled.any() else None
        if probe is not None:
            samples["dropin_correct"] = probe.predict(teacher["outputs"][labelled]) == y[labelled]
            samples["refit_correct"] = samples["dropin_correct"]
    return Original(outputs=teacher, probe_train=probe_train, probe=probe, samples=samples)


def per_sample(student: dict, original: Original, student_probe_train: Optional[dict] = None) -> dict:
    """A model's per-sample results against the original on the same samples, in loader order.
    Classifiers: agrees (its top-1 class is the original's; every sample) and correct (labelled
    samples). Embedding models: cosine (to the original's embedding; every sample), dropin_correct
    (the original's probe; labelled samples, when there is a probe) and refit_correct (a probe
    fitted on this model's own features of the probe's training data, when they are given)."""
    teacher, y = original.outputs, student["labels"]
    if len(y) != len(teacher["labels"]) or not torch.equal(y, teacher["labels"]):
        raise ValueError("the model and the original were not evaluated on the same samples")
    labelled = y >= 0
    out = {}
    if "word_errors" in student:
        out["word_errors"] = student["word_errors"]
    if student["kind"] == "logits":
        s = student["outputs"].argmax(-1)
        out["agrees"] = s == teacher["outputs"].argmax(-1)
        if labelled.any():
            out["correct"] = s[labelled] == y[labelled]
        return out
    out["cosine"] = F.cosine_similarity(student["outputs"], teacher["outputs"], dim=-1).double()
    if original.probe is not None and labelled.any():
        out["dropin_correct"] = original.probe.predict(student["outputs"][labelled]) == y[labelled]
        refit = _fit_probe(student_probe_train)
        if refit is not None:
            out["refit_correct"] = refit.predict(student["outputs"][labelled]) == y[labelled]
    return out


# per-sample result -> (name of the paired difference, how it is paired)
PAIRED = {"word_errors": ("wer", paired_wer),
          "correct": ("accuracy", paired_accuracy_difference),
          "dropin_correct": ("dropin_probe", paired_accuracy_difference),
          "refit_correct": ("refit_probe", paired_accuracy_difference),
          "cosine": ("cosine", paired_mean_difference)}


def compare(a: dict, b: dict) -> dict:
    """Model a - model b on the same samples, from their per_sample results: each task metric's
    difference with its paired standard error (accuracies as fractions, cosine as is). Speech:
    the WER only (a decoder's tokens of one utterance are not independent samples)."""
    if "word_errors" in a and "word_errors" in b:
        return {"wer": paired_wer(a["word_errors"], b["word_errors"])}
    return {name: pair(a[k], b[k]) for k, (name, pair) in PAIRED.items() if k in a and k in b}


def _mean(x: torch.Tensor) -> float:
    return float(x.double().mean())


def summarise(samples: dict, original: Original) -> dict:
    """The report's task metrics from per-sample results: accuracy and top-1 agreement for
    classifiers; cosine, the drop-in probe and the refit probe for embedding models; each against
    the original as a paired difference (vs_original)."""
    t = original.samples
    if "word_errors" in samples:  # speech: utterances, scored by WER; the token figures are teacher-forced
        out = {"task": "transcription", "teacher_wer": wer(t["word_errors"]), "student_wer": wer(samples["word_errors"]),
               "eval_samples": len(samples["word_errors"]), "top1_agreement": _mean(samples["agrees"]),
               "eval_tokens": len(samples["agrees"])}
    elif "agrees" in samples:
        out = {"task": "classification", "top1_agreement": _mean(samples["agrees"]),
               "eval_samples": len(samples["agrees"])}
        if "correct" in samples:
            out["teacher_accuracy"] = _mean(t["correct"])
            out["student_accuracy"] = _mean(samples["correct"])
    else:
        cos = samples["cosine"]
        out = {"task": "embedding", "mean_cosine": _mean(cos), "min_cosine": float(cos.min()),
               "eval_samples": len(cos)}
        if "dropin_correct" in samples:
            out["teacher_probe_accuracy"] = _mean(t["dropin_correct"])
            out["student_probe_accuracy"] = _mean(samples["dropin_correct"])
        if "refit_correct" in samples:
            out["teacher_refit_probe_accuracy"] = _mean(t["refit_correct"])
            out["refit_probe_accuracy"] = _mean(samples["refit_correct"])
    versus = {k: v for k, v in compare(samples, t).items() if k != "cosine"}  # cosine is relative already
    if versus:
        out["vs_original"] = versus
    return out


def metrics(student: dict, teacher: dict, probe_train: Optional[dict],
            student_probe_train: Optional[dict] = None) -> dict:
    """Classifiers: accuracy (with labels) and top-1 agreement; embedding models: cosine
    similarity to the original's embeddings, the drop-in probe's accuracy (fitted on the
    original's features of probe_train) and, given the model's own features of the same samples,
    the refit probe's; differences from the original with their paired standard errors."""
    original = original_side(teacher, probe_train)
    return summarise(per_sample(student, original, student_probe_train), original)


def evaluate(student: nn.Module, teacher: nn.Module, val_loader, device, profile: Optional[dict],
             probe_loader=None, original: Optional[Original] = None, refit: bool = True,
             transcripts: Optional[Transcripts] = None) -> tuple[dict, Evaluation]:
    """Returns (report, Evaluation). Evaluation.samples pairs this model against another one
    evaluated on the same loader (compare); pass Evaluation.original back as `original` to
    evaluate another model without running the original again. With a probe loader, embedding
    models also run over it (the refit probe's training features): one more pass."""
    if original is None:
        original = Original(outputs=collect(teacher, val_loader, device, "eval original", transcripts=transcripts))
    got = collect(student, val_loader, device, "eval ACM", transcripts=transcripts)
    if len(got["labels"]) == 0:  # e.g. --val-fraction 0: nothing to measure, the budget report says so too
        report = {"task": None, "eval_samples": 0, **budget_report(student, got["hist"], profile)}
        return report, Evaluation(report=report, samples={}, original=original)
    student_probe_train = None
    if got["kind"] == "embedding" and probe_loader is not None and (got["labels"] >= 0).any():
        if original.probe_train is None:
            original = original_side(original.outputs, collect(teacher, probe_loader, device, "probe features"))
        if original.probe is not None and refit:  # refit=False: the drop-in probe only, one pass less
            student_probe_train = collect(student, probe_loader, device, "refit-probe features")
    if not original.samples:
        original = original_side(original.outputs, original.probe_train)
    samples = per_sample(got, original, student_probe_train)
    report = {**summarise(samples, original), **budget_report(student, got["hist"], profile)}
    if transcripts is not None and transcripts.blank is not None:
        report["decoding"] = "ctc"  # its token figures are per audio frame, not per transcript token
    return report, Evaluation(report=report, samples=samples, original=original)
