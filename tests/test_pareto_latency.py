"""benchmarks.pareto_latency on the tiny ViT: converts the static and the ACM checkpoint, evaluates
them paired, exports the dense, plain and custom-op ONNX models and times them on real held-out
batches; a second run reuses every cached file."""
import json
from pathlib import Path

import onnx
import pytest
import torch
from tiny_run import TINY, TINY_ARGS, write_squares

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from benchmarks import pareto_latency as pl  # noqa: E402
from acmtool.runtime.build import find_library  # noqa: E402


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    if find_library() is None:
        pytest.skip("the custom-op library is not built (make build)")
    torch.manual_seed(0)
    work = tmp_path_factory.mktemp("pareto")
    npz = write_squares(work / "squares.npz")
    task = pl.Task("tiny", lambda: TINY, npz, "val",
                   {"model_args": TINY_ARGS, "max_steps": 3, "checkpoint_minutes": 60})
    rows = pl.run([task], budgets=(0.5,), batches=(1, 4), work=work, convert=True, rounds=3, threads=1)
    return {"task": task, "work": work, "rows": rows}


def ops_of(path):
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_rows_for_dense_static_and_acm_at_each_batch(done):
    rows = done["rows"]
    assert sorted((r["batch"], r["method"]) for r in rows) == [(1, "acm"), (1, "dense"), (1, "static"),
                                                                (4, "acm"), (4, "dense"), (4, "static")]
    for r in rows:
        assert r["rounds"] == 3 and r["latency_vs_dense"] > 0 and r["p50_ms"] > 0
        assert r["metric"] == "accuracy" and 0 <= r["accuracy"] <= 1 and r["eval_samples"] == 40
    acm = next(r for r in rows if r["method"] == "acm")
    static = next(r for r in rows if r["method"] == "static")
    dense = next(r for r in rows if r["method"] == "dense")
    assert dense["latency_vs_dense"] == 1.0 and dense["accuracy"] == acm["original_accuracy"]
    assert acm["vs_original"] == pytest.approx(acm["accuracy"] - acm["original_accuracy"])
    assert acm["vs_static"] == pytest.approx(acm["accuracy"] - static["accuracy"]) and acm["vs_static_se"] >= 0
    assert abs(static["achieved_budget"] - 0.5) < 1e-6 and "vs_static" not in static


def test_static_runs_as_plain_onnx_and_the_acm_with_the_custom_op(done):
    work = done["work"]
    static_ops = ops_of(work / "tiny-static-b0.5.acm.onnx")
    assert "DynamicLearners" not in static_ops and static_ops & {"MatMul", "Gemm"}
    assert "DynamicLearners" in ops_of(work / "tiny-acm-b0.5.acm.onnx")
    assert "DynamicLearners" not in ops_of(work / "tiny-dense.onnx")
    assert json.loads((work / "tiny-acm-b0.5.acm.safetensors.minutes.json").read_text())["minutes"] > 0


def test_a_second_run_reuses_checkpoints_and_evaluation(done, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("converted or evaluated again")
    monkeypatch.setattr("acmtool.train.pipeline.convert", refuse)
    monkeypatch.setattr("acmtool.train.evaluate_checkpoint.evaluate_checkpoint", refuse)
    rows = pl.run([done["task"]], budgets=(0.5,), batches=(1,), work=done["work"], convert=True, rounds=2, threads=1)
    assert {r["method"] for r in rows} == {"dense", "static", "acm"}
    first = {r["method"]: r["accuracy"] for r in done["rows"] if r["batch"] == 1}
    assert {r["method"]: r["accuracy"] for r in rows} == first


def test_missing_checkpoints_are_reported_not_converted(tmp_path, done):
    lines = []
    assert pl.run([done["task"]], budgets=(0.25,), work=tmp_path, convert=False, log=lines.append) == []
    assert any("no checkpoints" in line and "--convert" in line for line in lines)


def test_every_model_sees_the_same_batch_in_a_round():
    from acmtool.runtime.bench import time_interleaved

    class Recorder:
        def __init__(self):
            self.seen = []

        def run(self, outputs, feeds):
            self.seen.append(feeds["x"])
    a, b = Recorder(), Recorder()
    batches = [{"x": i} for i in range(3)]
    primers = {n: (lambda r=r: r.run(None, {"x": "primer"})) for n, r in (("a", a), ("b", b))}
    time_interleaved({"a": pl.cycling_run(a, batches), "b": pl.cycling_run(b, batches)}, 2, 5, cooldown=0.001,
                     primers=primers)
    assert a.seen == b.seen
    assert [x for x in a.seen if x != "primer"] == [0, 1, 2, 0, 1, 2, 0]  # 2 warm-up calls, then 5 rounds
    assert a.seen.count("primer") == 5  # one untimed run before each timed one


def test_table_and_plot(done, tmp_path):
    text = pl.render(done["rows"])
    assert "ACM - static (s.e.)" in text and "static" in text and "dense" in text
    png = pl.plot(done["rows"], tmp_path / "p.png")
    assert png.stat().st_size > 1000


def test_more_learners_name_their_own_checkpoints_and_size_the_static_model(tmp_path, monkeypatch):
    """--learners 8: the ACM gets 8 learners, static at 0.25 runs k = 2 of 8, under TASK-l8 names."""
    import acmtool.train.pipeline as pipeline
    seen = []
    monkeypatch.setattr(pipeline, "convert", lambda opts: seen.append(opts))
    task = pl.with_learners(pl.Task("tiny", lambda: TINY, "x.npz", "val", {"model_args": TINY_ARGS}), 8)
    assert task.name == "tiny-l8" and task.options == {"model_args": TINY_ARGS, "num_learners": 8}
    for method in ("acm", "static"):
        path = pl.converted(task, tmp_path, method, 0.25, convert=True, log=lambda *_: None)
        assert path.name == f"tiny-l8-{method}-b0.25.acm.safetensors"
    assert [(o.num_learners, o.static) for o in seen] == [(8, False), (8, True)]


def test_the_eight_learner_dinov2_task_is_named_and_sized_like_learners_8():
    """`--tasks dinov2-fashion-112-l8` finds the checkpoints that `--tasks dinov2-fashion-112 --learners 8` makes."""
    named, flag = pl.TASKS["dinov2-fashion-112-l8"], pl.with_learners(pl.TASKS["dinov2-fashion-112"], 8)
    assert named.name == flag.name == "dinov2-fashion-112-l8"
    assert named.options == flag.options and named.options["num_learners"] == 8
    assert named.checkpoint(Path("w"), "acm", 0.125) == flag.checkpoint(Path("w"), "acm", 0.125)
