"""Paired differences and their standard errors (hand-computed), and the evaluation's task metrics
on synthetic features whose answers are known: drop-in and refit probes, cosine, vs_original."""
import math

import pytest
import torch
import torch.nn as nn

from acmtool.train.evaluate import Original, compare, evaluate, metrics, original_side, per_sample
from acmtool.train.paired import paired_accuracy_difference, paired_mean_difference

T, F = True, False


def test_paired_accuracy_difference_by_hand():
    # per-sample differences 0, 1, -1, 0, 1: a_only 2, b_only 1; se = sqrt(3 - 1^2 / 5) / 5
    r = paired_accuracy_difference(torch.tensor([T, T, F, F, T]), torch.tensor([T, F, T, F, F]))
    assert (r["a_only"], r["b_only"], r["n"]) == (2, 1, 5)
    assert r["diff"] == pytest.approx(0.2, abs=1e-12)
    assert r["se"] == pytest.approx(math.sqrt(2.8) / 5, abs=1e-12)
    # the same as the standard error of the mean of the differences (population variance)
    d = torch.tensor([0, 1, -1, 0, 1], dtype=torch.float64)
    assert r["se"] == pytest.approx(float(d.std(correction=0)) / math.sqrt(5), abs=1e-12)


def test_paired_accuracy_difference_edge_cases():
    one = paired_accuracy_difference(torch.tensor([T]), torch.tensor([F]))
    assert one == {"diff": 1.0, "se": 0.0, "a_only": 1, "b_only": 0, "n": 1}  # sqrt(1 - 1^2 / 1) / 1
    assert paired_accuracy_difference(torch.tensor([F]), torch.tensor([F]))["se"] == 0.0
    a = torch.tensor([T] * 90 + [F] * 10)
    same = paired_accuracy_difference(a, a.clone())
    assert same == {"diff": 0.0, "se": 0.0, "a_only": 0, "b_only": 0, "n": 100}
    b = torch.tensor([T] * 80 + [F] * 20)
    r = paired_accuracy_difference(a, b)  # 10 images only a gets right: sqrt(10 - 10^2 / 100) / 100
    assert r["diff"] == pytest.approx(0.1, abs=1e-12) and r["se"] == pytest.approx(3 / 100, abs=1e-12)
    back = paired_accuracy_difference(b, a)
    assert back["diff"] == pytest.approx(-0.1, abs=1e-12) and back["se"] == r["se"]
    with pytest.raises(ValueError, match="same samples"):
        paired_accuracy_difference(a, b[:50])
    with pytest.raises(ValueError, match="no samples"):
        paired_accuracy_difference(torch.zeros(0, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))


def test_paired_mean_difference_by_hand():
    # differences 1, 2, 2, 3: mean 2, sample variance 2/3, se = sqrt(2/3) / 2
    r = paired_mean_difference(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert r["n"] == 4 and r["diff"] == pytest.approx(2.0) and r["se"] == pytest.approx(math.sqrt(2 / 3) / 2)
    same = paired_mean_difference(torch.tensor([0.9, 0.5, 0.7]), torch.tensor([0.9, 0.5, 0.7]))
    assert same == {"diff": 0.0, "se": 0.0, "n": 3}
    f64 = {"dtype": torch.float64}
    shifted = paired_mean_difference(torch.tensor([0.9, 0.5, 0.7], **f64), torch.tensor([0.8, 0.4, 0.6], **f64))
    assert shifted["diff"] == pytest.approx(0.1) and shifted["se"] == pytest.approx(0.0, abs=1e-12)
    one = paired_mean_difference(torch.tensor([0.75]), torch.tensor([0.5]))
    assert one == {"diff": 0.25, "se": None, "n": 1}  # one sample says nothing about the spread
    with pytest.raises(ValueError, match="same samples"):
        paired_mean_difference(torch.ones(3), torch.ones(4))


def test_the_benchmarks_use_the_same_formula():
    from benchmarks.paired import paired_difference
    a, b = torch.tensor([T, T, F, F, T]), torch.tensor([T, F, T, F, F])
    r = paired_difference(a, b)
    assert r["sigma"] == r["se"] == paired_accuracy_difference(a, b)["se"]


# --- the evaluation's metrics on synthetic features ------------------------------------------------

def clusters(n: int, seed: int, classes: int = 4, dim: int = 8) -> dict:
    """Well-separated classes: class c's features sit 3 units along axis c, the other axes noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, dim, generator=g) * 0.5
    x[torch.arange(n), y] += 3.0
    return {"kind": "embedding", "outputs": x, "labels": y, "hist": {}}


def transformed(c: dict, fn) -> dict:
    return {**c, "outputs": fn(c["outputs"])}


ROLL = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])  # the class axes move onto the noise axes


def roll(x: torch.Tensor) -> torch.Tensor:
    """The same information, on other axes."""
    return x[:, ROLL]


def test_a_student_identical_to_the_original_differs_by_zero():
    train, val = clusters(200, 0), clusters(120, 1)
    r = metrics(val, val, train, student_probe_train=train)
    assert r["task"] == "embedding" and r["eval_samples"] == 120
    assert r["mean_cosine"] == pytest.approx(1.0) and r["min_cosine"] == pytest.approx(1.0)
    assert r["student_probe_accuracy"] == r["teacher_probe_accuracy"] > 0.9
    assert r["refit_probe_accuracy"] == r["teacher_refit_probe_accuracy"] == r["teacher_probe_accuracy"]
    for key in ("dropin_probe", "refit_probe"):
        assert r["vs_original"][key] == {"diff": 0.0, "se": 0.0, "a_only": 0, "b_only": 0, "n": 120}
    assert "cosine" not in r["vs_original"]  # cosine is relative to the original already


def test_refit_probe_sees_through_a_permutation_the_drop_in_probe_does_not():
    train, val = clusters(200, 0), clusters(120, 1)
    r = metrics(transformed(val, roll), val, train, student_probe_train=transformed(train, roll))
    assert r["refit_probe_accuracy"] == r["teacher_refit_probe_accuracy"] > 0.9
    assert r["vs_original"]["refit_probe"]["diff"] == 0.0
    assert r["student_probe_accuracy"] < r["teacher_probe_accuracy"] - 0.4  # near chance (0.25)
    drop = r["vs_original"]["dropin_probe"]
    assert drop["diff"] == pytest.approx(r["student_probe_accuracy"] - r["teacher_probe_accuracy"])
    assert 0 < drop["se"] < 0.1 and drop["n"] == 120
    assert r["mean_cosine"] < 0.5


def test_without_the_students_probe_features_there_is_no_refit_probe():
    train, val = clusters(200, 0), clusters(60, 1)
    r = metrics(val, val, train)
    assert "student_probe_accuracy" in r and "refit_probe_accuracy" not in r
    assert set(r["vs_original"]) == {"dropin_probe"}
    no_probe = metrics(val, val, None)
    assert "student_probe_accuracy" not in no_probe and "vs_original" not in no_probe


def test_classifier_accuracy_against_the_original():
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    teacher = {"kind": "logits", "outputs": torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 1, 1]), 4).float(),
               "labels": y, "hist": {}}
    # the student gets sample 4 right (the original does not) and sample 1 wrong (the original does not)
    student = {**teacher, "outputs": torch.nn.functional.one_hot(torch.tensor([0, 2, 2, 3, 0, 1]), 4).float()}
    r = metrics(student, teacher, None)
    assert r["teacher_accuracy"] == pytest.approx(5 / 6) and r["student_accuracy"] == pytest.approx(5 / 6)
    assert r["top1_agreement"] == pytest.approx(4 / 6) and r["eval_samples"] == 6
    assert r["vs_original"] == {"accuracy": {"diff": 0.0, "se": pytest.approx(math.sqrt(2) / 6), "a_only": 1,
                                             "b_only": 1, "n": 6}}
    same = metrics(teacher, teacher, None)["vs_original"]["accuracy"]
    assert same["diff"] == 0 and same["se"] == 0
    # unlabelled samples (-1) count for agreement, not for accuracy
    part = {**teacher, "labels": torch.tensor([0, 1, -1, -1, -1, -1])}
    r = metrics({**student, "labels": part["labels"]}, part, None)
    assert r["eval_samples"] == 6 and r["vs_original"]["accuracy"]["n"] == 2
    unlabelled = {**teacher, "labels": torch.full((6,), -1)}
    assert "vs_original" not in metrics({**student, "labels": unlabelled["labels"]}, unlabelled, None)


def test_compare_pairs_two_models_through_their_per_sample_results():
    train, val = clusters(200, 0), clusters(120, 1)
    original = original_side(val, train)
    same = per_sample(val, original, train)
    noisy = per_sample(transformed(val, lambda x: x + torch.randn(x.shape, generator=torch.Generator().manual_seed(2))),
                       original, train)
    c = compare(noisy, same)
    assert set(c) == {"dropin_probe", "refit_probe", "cosine"}
    assert c["cosine"]["diff"] == pytest.approx(float(noisy["cosine"].mean() - 1), abs=1e-6) and c["cosine"]["n"] == 120
    assert c["dropin_probe"]["diff"] == pytest.approx(float(noisy["dropin_correct"].double().mean()
                                                            - same["dropin_correct"].double().mean()))
    with pytest.raises(ValueError, match="same samples"):
        per_sample(clusters(60, 3), original)


class Embedder(nn.Module):
    """A fixed linear map to [B, 1, D] hidden states (an embedding model); counts its batches."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.batches = 0

    def forward(self, x):
        self.batches += 1
        return (x @ self.weight).unsqueeze(1)


def loader(c: dict, batch: int = 50):
    return [(c["outputs"][i:i + batch], c["labels"][i:i + batch]) for i in range(0, len(c["labels"]), batch)]


def test_evaluate_runs_the_original_once_and_the_student_over_the_probe_data_only_when_given():
    torch.manual_seed(0)
    train, val = clusters(200, 0), clusters(100, 1)
    teacher, student = Embedder(torch.eye(8)), Embedder(torch.eye(8)[:, ROLL])
    report, ev = evaluate(student, teacher, loader(val), "cpu", None)
    assert teacher.batches == 2 and student.batches == 2 and "student_probe_accuracy" not in report
    report, ev = evaluate(student, teacher, loader(val), "cpu", None, probe_loader=loader(train),
                          original=ev.original)
    assert teacher.batches == 2 + 4 and student.batches == 2 + 2 + 4  # the original: its probe features only
    assert report["refit_probe_accuracy"] == report["teacher_refit_probe_accuracy"]
    assert report["student_probe_accuracy"] < report["teacher_probe_accuracy"] - 0.4
    assert set(ev.samples) == {"cosine", "dropin_correct", "refit_correct"}
    assert isinstance(ev.original, Original) and ev.original.probe is not None
    # another model on the same samples: the original is not run again, and the pair is exact
    same = Embedder(torch.eye(8))
    other, other_ev = evaluate(same, teacher, loader(val), "cpu", None, probe_loader=loader(train),
                               original=ev.original)
    assert teacher.batches == 6 and same.batches == 2 + 4
    assert other["vs_original"]["dropin_probe"]["se"] == 0.0
    c = compare(ev.samples, other_ev.samples)
    assert c["refit_probe"]["diff"] == 0.0 and c["dropin_probe"]["diff"] == pytest.approx(
        report["student_probe_accuracy"] - other["student_probe_accuracy"])


def test_an_empty_evaluation_set_gives_a_report_not_a_crash():
    from acmtool.cli.eval_cmd import render_eval
    report, ev = evaluate(Embedder(torch.eye(8)), Embedder(torch.eye(8)), [], "cpu", None, probe_loader=[])
    assert report["eval_samples"] == 0 and ev.samples == {}
    assert "no samples to evaluate on" in render_eval(report, "validation split")


def test_render_eval_shows_each_difference_in_points():
    from acmtool.cli.eval_cmd import render_eval, render_with_baseline
    train, val = clusters(200, 0), clusters(120, 1)
    r = metrics(transformed(val, roll), val, train, student_probe_train=transformed(train, roll))
    r.update(achieved_budget=0.5, static=False, checkpoint="a")
    text = render_eval(r, "test split of x")
    d = r["vs_original"]["dropin_probe"]
    assert f"drop-in probe: ACM - original {100 * d['diff']:+.2f} +- {100 * d['se']:.2f} points (n = 120)" in text
    assert "refit probe: ACM - original +0.00 +- 0.00 points (n = 120)" in text
    assert "On the test split of x (120 samples):" in text and "only 120 evaluation samples" in text
    base = {**metrics(val, val, train, student_probe_train=train), "achieved_budget": 0.5, "static": True,
            "checkpoint": "b"}
    original = original_side(val, train)
    r.update(baseline=base, vs_baseline=compare(per_sample(transformed(val, roll), original, transformed(train, roll)),
                                                per_sample(val, original, train)))
    both = render_with_baseline(r, "test split of x")
    assert "mean cosine: ACM - static -" in both and "drop-in probe: ACM - static -" in both
    assert "refit probe: ACM - static +0.00 +- 0.00 points (n = 120)" in both
    assert sum("hard to tell from noise" in line for line in both.splitlines()) == 1
