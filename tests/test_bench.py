"""acmtool bench and its logic (acmtool.runtime.bench), and the demo's ONNX helpers, on tiny models."""
import json
import time
from collections import namedtuple

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.errors import AcmInputError
from acmtool.runtime.bench import BenchConfig, input_shape, random_feeds, time_interleaved

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
LATENCY_FIELDS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "samples_per_s")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(ACM model in the custom-op format, the dense model it came from), both with a dynamic batch."""
    from acmtool.demo.deploy import export_dense
    from acmtool.export import export_onnx
    from acmtool.io.sources import load_model
    from acmtool.runtime import library_path
    try:
        library_path()
    except AcmInputError as e:
        pytest.skip(f"custom-op library not built: {e}")
    folder = tmp_path_factory.mktemp("bench")
    dense = load_model("timm:vit_tiny_patch16_224", model_kwargs=TINY)
    dense_path = export_dense(dense.model, dense.spec, folder / "dense.onnx", log=lambda _: None)
    acm = load_model("timm:vit_tiny_patch16_224", model_kwargs=TINY)
    acmtool.acmize_(acm.model, acmtool.AcmConfig(targets="mlp"))
    acm_path = export_onnx(acm.model.eval(), folder / "acm.onnx", torch.randn(2, 3, 32, 32), "custom-op")
    return acm_path, dense_path


def test_bench_json_with_baseline(models, tmp_path):
    acm_path, dense_path = models
    out = tmp_path / "bench.json"
    r = run("bench", acm_path, "--baseline", dense_path, "--batch", 3, "--warmup", 1, "--iters", 5,
            "--threads", 1, "--json", out)
    assert r.exit_code == 0, r.output
    assert "speed-up vs baseline" in r.output and "p99 ms" in r.output
    report = json.loads(out.read_text())
    for role in ("model", "baseline"):
        assert all(report[role][f] > 0 for f in LATENCY_FIELDS), report[role]
        assert report[role]["p50_ms"] <= report[role]["p90_ms"] <= report[role]["p99_ms"]
        assert report[role]["inputs"] == {"input": {"shape": [3, 3, 32, 32], "dtype": "float32"}}
    assert report["model"]["path"] == str(acm_path) and report["baseline"]["path"] == str(dense_path)
    assert report["speedup"] > 0 and report["interleaved"]
    assert report["provider"] == "CPUExecutionProvider" and not report["io_binding"]
    assert report["config"]["iters"] == 5 and report["config"]["threads"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_bench_alone_has_no_ratio(models):
    from acmtool.runtime.bench import bench
    report = bench(models[1], BenchConfig(warmup=0, iters=3))
    assert report["baseline"] is None and report["speedup"] is None and not report["interleaved"]
    assert report["model"]["inputs"]["input"]["shape"] == [1, 3, 32, 32]  # dynamic batch: 1 by default


def test_io_binding_path(models, monkeypatch):
    """The device path (IOBinding, as on CUDA) exercised with ONNX Runtime's CPU device."""
    from acmtool.runtime import bench as bench_module
    monkeypatch.setattr(bench_module, "DEVICE_PROVIDERS", {"CPUExecutionProvider": "cpu"})
    report = bench_module.bench(models[0], BenchConfig(batch=2, warmup=1, iters=3), baseline=models[1])
    assert report["io_binding"] and report["speedup"] > 0 and report["model"]["p50_ms"] > 0


@pytest.mark.parametrize("case", ["missing", "baseline missing", "not onnx", "provider"])
def test_bench_bad_input_exits_2(models, tmp_path, case):
    acm_path, dense_path = models
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    args = {"missing": [tmp_path / "nope.onnx"],
            "baseline missing": [acm_path, "--baseline", tmp_path / "nope.onnx"],
            "not onnx": [tmp_path / "junk.onnx"],
            "provider": [acm_path, "--provider", "NoSuchExecutionProvider"]}[case]
    out = tmp_path / "bench.json"
    r = run("bench", *args, "--iters", 1, "--json", out)
    assert r.exit_code == 2, r.output
    message = {"missing": "no such file", "baseline missing": "no such file", "not onnx": "not an ONNX model",
               "provider": "NoSuchExecutionProvider is not available"}[case]
    assert "acmtool: error:" in r.stderr and message in r.stderr, r.stderr
    assert not out.exists()


def test_a_provider_this_onnxruntime_lacks_exits_2(models):
    missing = [p for p in ort.get_all_providers() if p not in ort.get_available_providers()]
    if not missing:
        pytest.skip("this onnxruntime has every provider")
    r = run("bench", models[0], "--provider", missing[0], "--iters", 1)
    assert r.exit_code == 2 and f"{missing[0]} is not available" in r.stderr, r.output


# --- inputs and timing, no model needed --------------------------------------------------------
Arg = namedtuple("Arg", "name type shape")


class FakeSession:
    def __init__(self, inputs):
        self.inputs = inputs

    def get_inputs(self):
        return self.inputs


def test_random_feeds_fit_text_and_image_inputs():
    text = FakeSession([Arg("input_ids", "tensor(int64)", ["batch", "seq"]),
                        Arg("attention_mask", "tensor(int64)", ["batch", "seq"]),
                        Arg("token_type_ids", "tensor(int64)", [None, "seq"])])
    feeds = random_feeds(text, BenchConfig(batch=4, seq=7, vocab=50), np.random.default_rng(0))
    assert {n: a.shape for n, a in feeds.items()} == {n: (4, 7) for n in feeds}
    ids = feeds["input_ids"]
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 1
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()
    image = FakeSession([Arg("pixels", "tensor(float)", ["batch", 3, 8, 8])])
    x = random_feeds(image, BenchConfig(), np.random.default_rng(0))["pixels"]
    assert x.shape == (1, 3, 8, 8) and x.dtype == np.float32 and abs(float(x.mean())) < 0.5


def test_shared_inputs_are_the_same_array():
    shared = {}
    a = random_feeds(FakeSession([Arg("input", "tensor(float)", ["b", 4])]), BenchConfig(batch=2),
                     np.random.default_rng(0), shared)
    b = random_feeds(FakeSession([Arg("input", "tensor(float)", ["batch", 4])]), BenchConfig(batch=2),
                     np.random.default_rng(1), shared)
    assert a["input"] is b["input"]


def test_fixed_batch_axis():
    assert input_shape([2, 3], None, 5, "x") == (2, 3)
    with pytest.raises(AcmInputError, match="fixed batch size of 2"):
        input_shape([2, 3], 8, 5, "x")


def test_interleaved_rounds_rotate_the_order():
    calls = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = time_interleaved(runs, warmup=1, iters=4, cooldown=0)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert all(t.shape == (4,) and (t >= 0).all() for t in times.values())


def test_interleaved_runs_start_after_a_pause_and_an_untimed_run():
    # each timed run of several comes after a pause of `cooldown` and one untimed run of its own,
    # straight before it; a run alone never waits
    marks = []
    runs = {n: (lambda n=n: marks.append((n, time.perf_counter()))) for n in "ab"}
    time_interleaved(runs, warmup=0, iters=3, cooldown=0.02)
    assert [n for n, _ in marks] == ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    gaps = [b - a for (_, a), (_, b) in zip(marks, marks[1:])]
    assert min(gaps[1::2]) >= 0.02  # the pause comes before each pair
    marks.clear()
    started = time.perf_counter()
    time_interleaved({"a": runs["a"]}, warmup=0, iters=3, cooldown=1.0)
    assert time.perf_counter() - started < 1.0 and len(marks) == 3


# --- the demo's helpers -------------------------------------------------------------------------
def test_demo_speed_rows_and_table(models):
    from acmtool.demo.deploy import speed_rows, speed_table
    rows = speed_rows(*models, batches=(2, 1), warmup=1, iters=3, threads=1)
    assert [r["batch"] for r in rows] == [2, 1]
    assert all(r["speedup"] > 0 and r["dense_p50_ms"] > 0 and r["acm_p50_ms"] > 0 for r in rows)
    text = speed_table(rows)
    lines = text.splitlines()
    assert "speed-up" in lines[0] and len(lines) == 4 and all(ln.endswith("x") for ln in lines[2:])


def test_demo_onnx_accuracy_and_verify_line(models):
    from torch.utils.data import TensorDataset
    from acmtool.demo.deploy import onnx_accuracy, verify_line
    from acmtool.runtime import session
    sess = session(models[1])
    x = torch.randn(10, 3, 32, 32)
    predicted = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0].argmax(-1))
    labels = predicted.clone()
    labels[:3] = (labels[:3] + 1) % 5  # three wrong
    r = onnx_accuracy(sess, TensorDataset(x, labels), None, batch_size=4)
    assert r["images"] == 10 and r["accuracy"] == pytest.approx(0.7)
    line = verify_line({"provider": "CPUExecutionProvider", "max_abs_diff": 1e-6, "tolerance": 1e-4,
                        "output_scale": 0.5, "allowed": 1e-4,
                        "k_agreement": 1.0, "k_found": 2, "acms": 2, "top1_agreement": None})
    assert line == ("CPUExecutionProvider: max |ORT - PyTorch| = 1e-06 (allowed 0.0001); K agreement "
                    "100.000 % over 2/2 ACMs; top-1 agreement n/a")
    line = verify_line({"provider": "CPUExecutionProvider", "max_abs_diff": 2.45e-4, "tolerance": 1e-4,
                        "output_scale": 31.0, "allowed": 3.1e-3,
                        "k_agreement": 1.0, "k_found": 2, "acms": 2, "top1_agreement": None})
    assert "(allowed 0.0031: tolerance 0.0001 x output scale 31)" in line


def test_verify_tolerance_scales_with_the_output():
    from acmtool.export.verify import allowed_diff
    assert allowed_diff(1e-4, 0.3) == 1e-4  # small outputs: the tolerance as given
    assert allowed_diff(1e-4, 40.0) == pytest.approx(4e-3)


def test_rounds_within_a_time_box():
    import time as _time
    from acmtool.runtime.bench import MIN_ROUNDS, BenchConfig, rounds_within
    slow = {"a": lambda: _time.sleep(0.01), "b": lambda: _time.sleep(0.01)}
    assert rounds_within(slow, BenchConfig(iters=100)) == 100  # no box: as asked
    assert rounds_within(slow, BenchConfig(iters=100, max_seconds=0.001)) == MIN_ROUNDS  # never fewer
    assert MIN_ROUNDS <= rounds_within(slow, BenchConfig(iters=100, max_seconds=0.5)) <= 25  # 20 ms a round
    assert rounds_within(slow, BenchConfig(iters=3, max_seconds=0.001)) == 3  # never more than asked
    with pytest.raises(AcmInputError, match="--max-seconds"):
        BenchConfig(max_seconds=0)


def test_bench_profile_splits_time_by_node_type_and_role(models, tmp_path):
    acm_path, dense_path = models
    out = tmp_path / "bench.json"
    r = run("bench", acm_path, "--baseline", dense_path, "--batch", 2, "--warmup", 1, "--iters", 3,
            "--threads", 1, "--profile", 4, "--json", out)
    assert r.exit_code == 0, r.output
    assert "node type" in r.output and "learners" in r.output
    report = json.loads(out.read_text())
    acm, dense = report["model"]["profile"], report["baseline"]["profile"]
    assert acm["runs"] == 4 and dense["runs"] == 4
    # the tiny ViT has two ACMs: their DynamicLearners nodes and their gates are found by role
    assert acm["by_type"]["DynamicLearners"]["nodes"] == 2
    assert acm["by_role"]["learners"]["us"] == pytest.approx(acm["by_type"]["DynamicLearners"]["us"])
    assert acm["by_role"]["gates"]["us"] > 0 and "ArgMax" in acm["by_type"]
    assert dense["by_role"]["learners"]["us"] == 0 and dense["by_role"]["gates"]["us"] == 0
    for prof in (acm, dense):
        assert sum(v["share"] for v in prof["by_role"].values()) == pytest.approx(1.0)
        assert sum(v["us"] for v in prof["by_type"].values()) == pytest.approx(prof["total_us"])
        assert 0 < prof["total_us"] <= prof["run_us"]


def test_profile_counts_dense_fallback_blocks_apart_from_gates(tmp_path):
    # an ACM exported as its dense block has no gate: its MatMuls are 'dense_blocks', not 'gates'
    from acmtool.export import export_onnx
    from acmtool.io.sources import load_model
    from acmtool.runtime.profile import node_roles
    acm = load_model("timm:vit_tiny_patch16_224", model_kwargs=TINY)
    acmtool.acmize_(acm.model, acmtool.AcmConfig(targets="mlp+attn"))
    names = [n for n, _ in acmtool.layers.acm_modules(acm.model)]
    dense = [n for n in names if n.endswith("mlp")][:1] + [n for n in names if ".qkv.parts." in n][:1]
    path = export_onnx(acm.model.eval(), tmp_path / "fb.onnx", torch.randn(2, 3, 32, 32), "custom-op",
                       dense={n: 0.95 for n in dense})
    roles = list(node_roles(path).values())
    assert roles.count("learners") == len(names) - 2  # the other ACMs' DynamicLearners nodes
    # an MLP's two MatMuls and a qkv part's (inside its split projection) at least; the others' gates
    assert roles.count("dense_blocks") >= 4 and roles.count("gates") >= 2 * (len(names) - 2)


def test_profile_summary_leaves_the_warm_up_runs_out():
    from acmtool.runtime.profile import summarise
    events = [{"cat": "Session", "name": "model_run", "ts": ts, "dur": 100} for ts in (0, 1000, 2000)]
    events += [{"cat": "Node", "name": f"n{i}_kernel_time", "ts": ts + 10, "dur": dur, "args": {"op_name": op}}
               for ts, dur in ((0, 999), (1000, 30), (2000, 50)) for i, op in ((0, "MatMul"),)]
    events += [{"cat": "Node", "name": "d_kernel_time", "ts": 2020, "dur": 20, "args": {"op_name": "DynamicLearners"}}]
    s = summarise(events, {"n0": "gates"}, skip_runs=1)
    assert s["runs"] == 2
    assert s["by_type"]["MatMul"] == {"us": 40.0, "share": pytest.approx(40 / 50), "nodes": 1.0}
    assert s["by_role"]["gates"]["us"] == 40.0 and s["by_role"]["learners"]["us"] == 10.0
    with pytest.raises(ValueError, match="no model run"):
        summarise(events, {}, skip_runs=3)
