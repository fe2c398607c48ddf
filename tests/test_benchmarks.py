"""Smoke test of `python -m benchmarks run`'s pieces on tiny shapes (seconds, not the real sizes)."""
import json

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("timm")
pytest.importorskip("matplotlib")

from acmtool.runtime import library_path  # noqa: E402


def _library_or_skip():
    try:
        library_path()
    except Exception as e:  # not built: the ORT pieces cannot run
        pytest.skip(f"custom-op library unavailable: {e}")


def test_ops_tiny():
    _library_or_skip()
    from benchmarks import ops
    rows = ops.ort_rows((0.5,), (3,), rounds=1, threads=1, standard=False)
    assert len(rows) == 1 and rows[0]["tokens"] == 3 and rows[0]["speedup_vs_dense"] > 0
    # against the op's own K = N on the same tokens, and that ratio as a share of 1 / (mean K/N)
    r = rows[0]
    assert r["speedup_vs_full"] > 0 and r["custom_full_ms"] > 0
    if r["mean_k_over_n"] > 0:
        assert r["share_of_ideal"] == pytest.approx(r["speedup_vs_full"] * r["mean_k_over_n"])
    assert "vs own K=N" in ops.render_ort(rows)
    trows = ops.torch_rows((0.5, 1.0), (3,), rounds=1)
    assert [r["budget"] for r in trows] == [0.5, 1.0] and trows[1]["mean_k_over_n"] == 1.0
    assert "DynLearners ms" in ops.render_ort(rows) and "grouped ms" in ops.render_torch(trows)


def test_models_tiny(tmp_path):
    _library_or_skip()
    from benchmarks import models
    kwargs = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 3}
    rows = models.model_rows("timm:vit_tiny_patch16_224", (0.5,), (1, 2), ("mlp",), tmp_path, warmup=0, iters=2,
                             threads=1, log=lambda *_: None, model_kwargs=kwargs)
    assert [r["batch"] for r in rows] == [1, 2]
    r = rows[0]
    assert abs(r["achieved_budget"] - 0.5) < 0.3 and 0 < r["flops_ratio"] < 1.1
    assert r["acm_p50_ms"] <= r["acm_p99_ms"] and r["speedup"] > 0
    assert "FLOPs ratio" in models.render(rows) and "of ideal" in models.render(rows)
    assert r["share_of_ideal"] == pytest.approx(r["speedup"] / r["ideal_speedup"])
    # where the time goes: the one ACM's learners and gate, the rest; the dense model's node time
    assert r["acm_learners_ms"] > 0 and r["acm_gates_ms"] > 0 and r["acm_rest_ms"] > 0 and r["dense_nodes_ms"] > 0
    assert "DynamicLearners" in r["acm_by_type_ms"] and "DynamicLearners" not in r["dense_by_type_ms"]
    assert "ACM gates ms" in models.render_profile(rows)
    assert r["gated_budget"] == pytest.approx(r["achieved_budget"], abs=0.3)
    # two profiles' times: positive, but not surely above 1 on a loaded machine (speed is for benchmarks)
    assert models.time_ideal(r) > 0
    # dense 5 ms, of which 1 is not gated; gated blocks at half their time: 5 / (1 + 0.5 x 4)
    assert models.time_ideal({"acm_rest_ms": 1.0, "dense_nodes_ms": 5.0, "gated_budget": 0.5}) == pytest.approx(5 / 3)
    assert models.time_ideal({"acm_rest_ms": 0.5, "acm_dense_blocks_ms": 0.5, "dense_nodes_ms": 5.0,
                              "gated_budget": 0.5}) == pytest.approx(5 / 3)
    assert models.time_ideal({"dense_nodes_ms": 5.0}) is None
    # the benchmarked ONNX model computes what the PyTorch model computes
    assert r["verify_passed"] and r["verify_max_abs_diff"] <= r["verify_allowed"] and r["verify_k_agreement"] == 1.0
    assert " ok " in models.render(rows)


def test_verify_rows_check_every_model_without_timing(tmp_path):
    _library_or_skip()
    from benchmarks import models
    kwargs = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 3}
    rows = models.verify_rows("timm:vit_tiny_patch16_224", (0.25, 0.75), ("mlp", "mlp+attn"), tmp_path,
                              log=lambda *_: None, model_kwargs=kwargs)
    assert [(r["targets"], r["budget"]) for r in rows] == [("mlp", 0.25), ("mlp", 0.75), ("mlp+attn", 0.25),
                                                           ("mlp+attn", 0.75)]
    assert all(r["verify_passed"] and r["verify_max_abs_diff"] <= r["verify_allowed"] for r in rows)
    assert not list(tmp_path.iterdir())  # the exports are removed


def test_time_ideal_weighs_the_nodes_by_their_measured_time():
    from benchmarks import models
    # dense 100 ms: 40 in the gated blocks, 60 elsewhere (rest 50 + a dense fallback block 10);
    # at a gated budget of 0.25 the blocks would take 10 ms: 100 / 70
    row = {"dense_nodes_ms": 100.0, "acm_rest_ms": 50.0, "acm_dense_blocks_ms": 10.0, "gated_budget": 0.25}
    assert models.time_ideal(row) == pytest.approx(100 / 70)
    assert models.time_ideal({"dense_nodes_ms": 100.0}) is None  # no profile


def test_pareto_and_entry_point(tmp_path, capsys):
    from benchmarks import pareto
    from benchmarks.__main__ import main
    # empty folder: says so, exits 0
    work = ["--work", str(tmp_path / "work")]  # no checkpoints: the latency part says how to make them
    assert main(["run", "--skip-ops", "--skip-models", "--out", str(tmp_path), *work]) == 0
    out = capsys.readouterr().out
    assert "no accuracy results" in out and "benchmarks.pareto_latency --convert" in out
    rows = [{"budget": 0.5, "dense_acc": 0.9, "acm_acc": 0.88, "acm_budget": 0.5, "acm_flops": 0.7,
             "static_acc": 0.85, "static_budget": 0.5, "static_flops": 0.68, "diff_sigma": 0.004}]
    (tmp_path / "accuracy-fashion-vit-x.json").write_text(json.dumps({"rows": rows}))
    minilm = {"args": {"budget": 0.5, "static": False},
              "report": {"validation": {"teacher_probe_accuracy": 0.5, "student_probe_accuracy": 0.48,
                                        "achieved_budget": 0.5, "flops": {"ratio": 0.69}}}}
    (tmp_path / "accuracy-minilm-fortunes-acm-b0.5-x.json").write_text(json.dumps(minilm))
    # a variant of the Fashion-MNIST benchmark (another seed, --labels, --targets) stays out of the table
    variant_rows = [dict(rows[0], acm_acc=0.1)]
    (tmp_path / "accuracy-seed1-labels-fashion-vit-x.json").write_text(json.dumps({"rows": variant_rows}))
    points = pareto.collect(tmp_path)
    assert [p["accuracy"] for p in points if p["method"] == "acm" and p["task"] == "fashion-vit"] == [0.88]
    assert {(p["task"], p["method"]) for p in points} == {("fashion-vit", "dense"), ("fashion-vit", "acm"),
                                                         ("fashion-vit", "static"), ("minilm-fortunes", "dense"),
                                                         ("minilm-fortunes", "acm")}
    assert main(["run", "--skip-ops", "--skip-models", "--out", str(tmp_path), *work]) == 0
    out = capsys.readouterr().out
    assert "fashion-vit" in out and "minilm-fortunes" in out
    assert "+3.00 +- 0.40" in out  # ACM - static with its paired standard error
    for ext in (".json", ".csv", ".png"):
        assert len(list(tmp_path.glob(f"accuracy-pareto-*{ext}"))) == 1


def test_fashion_variants_name_their_files():
    from argparse import Namespace

    from benchmarks.accuracy_fashion import variant
    assert variant(Namespace(seed=0, labels=False, targets="mlp")) == ""  # the README's files
    assert variant(Namespace(seed=1, labels=False, targets="mlp")) == "seed1-"
    assert variant(Namespace(seed=2, labels=True, targets="mlp+attn")) == "seed2-labels-attn-"


def test_readme_blocks_are_replaced_and_the_rest_kept(tmp_path):
    from benchmarks import readme
    doc = tmp_path / "README.md"
    doc.write_text("intro\n<!-- benchmarks:ops-ort -->\nold table\n<!-- /benchmarks:ops-ort -->\nmiddle\n"
                   "<!-- benchmarks:models -->\nold models\n<!-- /benchmarks:models -->\nend\n")
    doc.chmod(0o644)
    mode = 0o644
    done = readme.update({"ops-ort": readme.indented("a  b\n1  2"), "accuracy": "not in this file"}, doc)
    assert done == ["ops-ort"]
    text = doc.read_text()
    assert "    a  b\n    1  2\n<!-- /benchmarks:ops-ort -->" in text and "old table" not in text
    assert "old models" in text and text.startswith("intro\n") and text.endswith("end\n")
    assert readme.update({"ops-ort": readme.indented("a  b\n1  2")}, doc) == ["ops-ort"]
    assert doc.read_text() == text  # the same tables again: the same file
    assert [f.name for f in tmp_path.iterdir()] == ["README.md"]  # no temporary file left
    assert doc.stat().st_mode & 0o777 == mode


def test_readme_summary_and_image():
    from benchmarks import readme
    ort_rows = [{"provider": "CPUExecutionProvider", "tokens": 1576, "budget": b, "speedup_vs_dense": 2 / b,
                 "speedup_vs_standard": 3 / b} for b in (0.25, 0.5)]
    torch_rows = [{"device": "cpu", "tokens": 1576, "budget": 1.0, "grouped_speedup_vs_dense": 0.99}]
    text = readme.summary(ort_rows, torch_rows)
    assert "8.00x" in text and "4.00x" in text and "12.00x" in text and "0.99x" in text and " - " in f"{text} "
    assert readme.image(readme.README.parent / "benchmarks" / "results" / "p.png") == \
        "\n![accuracy against compute](benchmarks/results/p.png)\n"
    assert readme.image(readme.README.parent.parent / "elsewhere.png") == ""


def test_the_readme_has_every_block():
    from benchmarks import readme
    text = readme.README.read_text()
    for name in ("summary", "setup", "ops-ort", "ops-torch", "models", "models-profile", "accuracy", "latency-pareto"):
        assert f"<!-- benchmarks:{name} -->" in text and f"<!-- /benchmarks:{name} -->" in text


def test_paired_difference_counts_the_images_one_model_gets_right():
    import torch
    from benchmarks.paired import paired_difference
    a = torch.tensor([True] * 90 + [False] * 10)
    b = torch.tensor([True] * 80 + [False] * 20)
    r = paired_difference(a, b)
    assert r["a_only"] == 10 and r["b_only"] == 0 and r["n"] == 100
    assert abs(r["diff"] - 0.10) < 1e-12
    assert abs(r["sigma"] - (10 - 100 / 100) ** 0.5 / 100) < 1e-12  # sqrt(10 - 10^2 / 100) / 100
    same = paired_difference(a, a)
    assert same["diff"] == 0 and same["sigma"] == 0
