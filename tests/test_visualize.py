"""acmtool visualize: per-token compute maps of vision transformers, on a tiny timm ViT."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import acmtool
from acmtool.cli.main import cli
from acmtool.errors import AcmInputError
from acmtool.layers.acm import acm_modules

pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install acmtool[plot])")

TINY = '{"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 5}'
GRID = (4, 4)  # 32 px / 8 px patches


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def randomise_gates(model):
    """Trained-looking gates: every k occurs, so the maps are not constant."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, m in acm_modules(model):
            m.gate.fc2.weight.copy_(torch.randn(m.gate.fc2.weight.shape, generator=g) * 3)
            m.gate.fc2.bias.zero_()
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(ACM checkpoint of a tiny timm ViT with mixed gates, an RGB image file)."""
    folder = tmp_path_factory.mktemp("visualize")
    ckpt = folder / "vit.acm.safetensors"
    r = run("convert", "timm:vit_tiny_patch16_224", "--model-args", TINY, "-o", ckpt, "--no-onnx",
            "--targets", "mlp+attn")
    assert r.exit_code == 0, r.output
    model = randomise_gates(acmtool.load(ckpt))
    acmtool.save(model, ckpt, source=model.acmtool_info["source"])
    image = folder / "photo.png"
    pixels = np.random.default_rng(0).integers(0, 256, (40, 52, 3), dtype=np.uint8)
    Image.fromarray(pixels, mode="RGB").save(image)
    return ckpt, image


def test_visualize_writes_a_png(files, tmp_path):
    ckpt, image = files
    out = tmp_path / "map.png"
    r = run("visualize", ckpt, image, "-o", out)
    assert r.exit_code == 0, r.output
    assert "4x4 patch grid" in r.output
    with Image.open(out) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
        im.verify()
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]  # written atomically: no temporary left


@pytest.mark.parametrize("layer", ["mean", "blocks.0.mlp", "blocks.1"])
def test_visualize_one_layer(files, tmp_path, layer):
    ckpt, image = files
    r = run("visualize", ckpt, image, "-o", tmp_path / "m.png", "--layer", layer)
    assert r.exit_code == 0, r.output
    with Image.open(tmp_path / "m.png") as im:
        im.verify()


def test_maps_have_the_patch_grid_and_valid_k(files):
    from acmtool.data.preprocess import image_prep
    from acmtool.visualize import compute_map, open_image
    ckpt, image = files
    model = acmtool.load(ckpt)
    prep = image_prep(model, model.acmtool_info["source"])
    cmap = compute_map(model, prep(open_image(image)), prep)
    acms = dict(acm_modules(model))
    assert list(cmap.layers) == list(acms) and cmap.prefix_tokens == 1 and cmap.grid == GRID
    for name, k in cmap.layers.items():
        assert k.shape == GRID
        assert acms[name].min_k <= k.min() and k.max() <= acms[name].num_learners
    assert len(np.unique(np.stack(list(cmap.layers.values())))) > 1  # the gates chose different k
    assert cmap.mean.shape == GRID and cmap.min_k == 0 and cmap.max_k == 4
    assert cmap.image.shape == (32, 32, 3) and 0 <= cmap.image.min() and cmap.image.max() <= 1
    # the map is the k the model ran: the class token is left out, the patches in row-major order
    last = acms["blocks.1.mlp"].last_k
    assert np.array_equal(cmap.layers["blocks.1.mlp"].ravel(), last[0, 1:].numpy())


def test_demo_compute_map_png(files, tmp_path):
    from acmtool.demo.deploy import compute_map_png
    ckpt, _ = files
    model = acmtool.load(ckpt)
    cmap = compute_map_png(model, model.acmtool_info["source"], torch.randn(3, 32, 32), tmp_path / "c.png", "test")
    assert cmap.grid == GRID
    with Image.open(tmp_path / "c.png") as im:
        im.verify()


def test_hf_vit_prefix_tokens():
    transformers = pytest.importorskip("transformers")
    from acmtool.visualize import compute_map
    for cls, config_cls, prefix in ((transformers.ViTModel, transformers.ViTConfig, 1),
                                    (transformers.DeiTModel, transformers.DeiTConfig, 2)):
        config = config_cls(image_size=16, patch_size=4, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=40)
        model = cls(config).eval()
        acmtool.acmize_(model, acmtool.AcmConfig(targets="mlp"))
        cmap = compute_map(model, torch.randn(3, 16, 16))
        assert cmap.prefix_tokens == prefix and cmap.grid == (4, 4) and len(cmap.layers) == 1


def test_a_text_model_exits_2(files, tmp_path):
    import transformers as T
    model = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)).eval()
    acmtool.acmize_(model, acmtool.AcmConfig(targets="mlp"))
    ckpt = acmtool.save(model, tmp_path / "bert.acm.safetensors")
    r = run("visualize", ckpt, files[1], "-o", tmp_path / "map.png")
    assert r.exit_code == 2
    assert "acmtool: error:" in r.stderr and "vision transformers" in r.stderr and "bert" in r.stderr, r.stderr
    assert not (tmp_path / "map.png").exists()


@pytest.mark.parametrize("case,message", [("missing image", "no such file"), ("not an image", "not an image"),
                                          ("not png", ".png"), ("bad layer", "no such ACM")])
def test_bad_input_exits_2(files, tmp_path, case, message):
    ckpt, image = files
    (tmp_path / "text.png").write_text("hello")
    out = tmp_path / "map.png"
    args = {"missing image": [ckpt, tmp_path / "nope.png", "-o", out],
            "not an image": [ckpt, tmp_path / "text.png", "-o", out],
            "not png": [ckpt, image, "-o", tmp_path / "map.jpg"],
            "bad layer": [ckpt, image, "-o", out, "--layer", "blocks.9"]}[case]
    r = run("visualize", *args)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert not out.exists() and not (tmp_path / "map.jpg").exists()


def test_compute_map_refuses_a_batch():
    from acmtool.io.sources import load_model
    from acmtool.visualize import compute_map
    loaded = load_model("timm:vit_tiny_patch16_224", model_kwargs={"img_size": 32, "patch_size": 8, "embed_dim": 48,
                                                                   "depth": 1, "num_heads": 3})
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(targets="mlp"))
    with pytest.raises(AcmInputError, match="one image"):
        compute_map(loaded.model, torch.randn(2, 3, 32, 32))
