"""Load the user's model from the sources DESIGN.md names, and rebuild it from a stored spec.

A spec is the JSON that rebuilds the architecture (random weights) when a checkpoint is loaded:
  {"kind": "timm", "name", "kwargs"} | {"kind": "hf", "class", "config", "path"}
  | {"kind": "file", "path", "sha256"} (a pickled module, reloaded through the safe loader)
  | {"kind": "ct2", "path", "sha256": {file: digest}, "config"} (a CTranslate2 Whisper folder: the
    architecture from the HF config, the original weights from the folder, each file checked)
  | {"kind": "user", "class"} (a model built in Python: acmtool.load(path, model=...)).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn

from acmtool.errors import AcmInputError
from acmtool.io.json_checks import BadValue
from acmtool.io.safe_pickle import load_untrusted
from acmtool.io.source_spec import TIMM_ARCH_ARGS, check_spec, check_timm_kwargs

CHECKPOINT_FORMAT = "acmtool.checkpoint"


@dataclass
class LoadedModel:
    model: nn.Module
    spec: dict


def load_model(source: str, weights: Optional[str] = None, arch: Optional[str] = None,
               trust_pickle: bool = False, model_kwargs: Optional[dict] = None) -> LoadedModel:
    """MODEL as the command line takes it: timm:NAME, ct2:FOLDER, a Hugging Face or CTranslate2 folder,
    .pt/.pth, .safetensors."""
    if source.startswith("timm:"):
        loaded = _timm(source[5:], model_kwargs or {})
        if weights:
            _load_state(loaded.model, _read_state_dict(Path(weights), trust_pickle), weights)
            _record_weights(loaded.spec, Path(weights))
        return loaded
    if weights:
        raise AcmInputError("--weights goes with a timm:NAME model; for files use MODEL itself (and --arch)")
    if source.startswith("ct2:") or _is_ct2(Path(source)):
        return _ct2_source(source.removeprefix("ct2:"), arch)
    path = Path(source)
    if path.is_dir():
        return _hf_folder(path, with_weights=True)
    check_file(path)
    if path.suffix == ".safetensors":
        if _is_acm_checkpoint(path):
            raise AcmInputError(f"{path} is already an ACM checkpoint; convert the original model "
                                f"(use acmtool inspect or export on this file)")
        return _with_arch(path, arch, _read_state_dict(path, trust_pickle), trust_pickle)
    if path.suffix in (".pt", ".pth", ".bin"):
        obj = load_untrusted(path, trust_pickle)
        if isinstance(obj, nn.Module):
            if arch:
                raise AcmInputError(f"{path} holds a whole module; --arch is only for state dicts")
            return LoadedModel(obj.float().eval(), _module_spec(obj, path))
        return _with_arch(path, arch, _as_state_dict(obj, path), trust_pickle)
    raise AcmInputError(f"{source}: not a model source acmtool knows; give timm:NAME, a Hugging Face model "
                        f"folder, a CTranslate2 Whisper folder (ct2:FOLDER), a .pt/.pth file or a .safetensors "
                        f"file with --arch")


def build_from_spec(spec: dict) -> nn.Module:
    """The architecture of a spec, with random (or the source file's) weights. The spec may come
    from an untrusted checkpoint: it is checked against its schema before anything is built."""
    try:
        check_spec(spec)
    except BadValue as e:
        raise AcmInputError(f"the checkpoint's model source is damaged or foreign ({e})") from None
    kind = spec["kind"]
    if kind == "timm":
        return _timm(spec["name"], spec["kwargs"]).model
    if kind == "hf":
        return _hf_from_config(spec["class"], spec["config"])
    if kind == "ct2":  # the architecture alone: a checkpoint loads without the original folder
        return _hf_from_config(CT2_WHISPER_CLASS, spec["config"])
    if kind == "file":
        path = Path(spec["path"])
        if not path.is_file():
            raise AcmInputError(f"this checkpoint was converted from the pickled module {path}, which is gone; "
                                f"pass the untrained model: acmtool.load(ckpt, model=...)")
        check_sha256(path, spec["sha256"], "the pickled module this checkpoint was converted from")
        model = load_untrusted(path)
        if not isinstance(model, nn.Module):
            raise AcmInputError(f"{path} no longer holds a module; pass the untrained model: "
                                f"acmtool.load(ckpt, model=...)")
        return model.float().eval()
    raise AcmInputError(f"this checkpoint was converted from a model built in Python ({spec.get('class')}); "
                        f"rebuild it and pass it: acmtool.load(ckpt, model=MyModel(...))")


def check_sha256(path: Path, expected: str, what: str) -> None:
    """The file at a recorded path is the file that was recorded, not whatever sits there now."""
    if file_sha256(path) != expected:
        raise AcmInputError(f"{path} has changed since the checkpoint was written (sha256 differs from {what}); "
                            f"restore the original file or pass the model yourself")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_original(spec: dict) -> nn.Module:
    """The source model with its original weights (the teacher, for eval), from a checkpoint's spec."""
    try:
        check_spec(spec)
    except BadValue as e:
        raise AcmInputError(f"the checkpoint's model source is damaged or foreign ({e})") from None
    kind = spec.get("kind")
    if kind == "timm":
        model = _timm(spec["name"], spec.get("kwargs", {})).model
        if spec.get("weights"):
            path = Path(spec["weights"])
            if not path.is_file():
                raise AcmInputError(f"the original weights {path} are gone; they are needed to compare against")
            if spec.get("weights_sha256"):
                check_sha256(path, spec["weights_sha256"], "the original weights")
            _load_state(model, _read_state_dict(path, False), str(path))
        return model
    if kind == "hf":
        if not spec.get("path") or not Path(spec["path"]).is_dir():
            raise AcmInputError(f"the original Hugging Face folder {spec.get('path')} is gone; it is needed to "
                                f"compare against")
        return _hf_folder(Path(spec["path"]), with_weights=True).model
    if kind == "ct2":
        return _ct2_original(spec)
    return build_from_spec(spec)


def user_spec(model: nn.Module, acm_config: Optional[dict] = None) -> dict:
    """The spec of a model built in Python: a transformers model by its config, a timm model by its
    name and the arguments that rebuild it (acmtool.io.timm_spec), else the class alone (loading
    then needs the model: acmtool.load(path, model=...))."""
    cls = type(model)
    if hasattr(model, "config") and type(model).__module__.startswith("transformers."):
        return {"kind": "hf", "class": cls.__name__, "config": model.config.to_dict(), "path": None}
    from acmtool.io.timm_spec import timm_spec
    spec = timm_spec(model, acm_config)
    if spec is not None:
        return spec
    return {"kind": "user", "class": f"{cls.__module__}.{cls.__qualname__}"}


# --- sources ------------------------------------------------------------------------------
def _timm(name: str, kwargs: dict) -> LoadedModel:
    try:
        import timm
    except ImportError:
        raise AcmInputError("timm models need timm: pip install timm") from None
    if not timm.is_model(name):
        raise AcmInputError(f"timm has no model {name!r}; list them with python -c \"import timm; "
                            f"print(timm.list_models('*vit*'))\"")
    try:
        check_timm_kwargs(kwargs, "model arguments")
    except BadValue as e:
        raise AcmInputError(f"timm model {name!r}: {e} (only architecture arguments: "
                            f"{', '.join(sorted(TIMM_ARCH_ARGS)[:6])}, ...)") from None
    try:
        with torch.random.fork_rng(devices=[]):  # timm:NAME without weights is the same model every time
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=False, **kwargs)
    except Exception as e:  # bad argument values raise anything from TypeError to AssertionError
        raise AcmInputError(f"timm model {name!r} could not be built with {kwargs}: {_first_line(e)}") from None
    return LoadedModel(model.eval(), {"kind": "timm", "name": name, "kwargs": kwargs})


def _hf_folder(path: Path, with_weights: bool) -> LoadedModel:
    if not (path / "config.json").is_file():
        raise AcmInputError(f"{path} is a folder without config.json: not a Hugging Face model folder")
    try:
        import transformers
    except ImportError:
        raise AcmInputError("Hugging Face models need transformers: pip install transformers") from None
    try:
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as e:
        raise AcmInputError(f"{path}/config.json could not be read: {_first_line(e)}") from None
    cls = _hf_class(config)
    if not with_weights:
        return LoadedModel(cls._from_config(config).eval(), _hf_spec(cls, config, path))
    try:
        model = cls.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except Exception as e:
        raise AcmInputError(f"{path}: the Hugging Face model could not be loaded: {_first_line(e)}") from None
    return LoadedModel(model.eval(), _hf_spec(cls, config, path))


def _hf_class(config):
    import transformers
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    try:
        return transformers.AutoModel._model_mapping[type(config)]
    except KeyError:
        raise AcmInputError(f"transformers has no model class for config {type(config).__name__}") from None


def _hf_spec(cls, config, path) -> dict:
    return {"kind": "hf", "class": cls.__name__, "config": config.to_dict(), "path": str(path) if path else None}


def _hf_from_config(class_name: str, config_dict: dict) -> nn.Module:
    """A transformers model of a known family, from a checked config; the class must be a
    PreTrainedModel whose config type is the recorded model_type."""
    import transformers
    model_type = config_dict["model_type"]
    if model_type not in known_hf_families():
        raise AcmInputError(f"the checkpoint names the Hugging Face model type {model_type!r}, which acmtool has no "
                            f"adapter for ({', '.join(sorted(known_hf_families()))})")
    cls = getattr(transformers, class_name, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
        raise AcmInputError(f"transformers has no model class {class_name!r} (needed to rebuild this checkpoint)")
    if getattr(cls.config_class, "model_type", None) != model_type:
        raise AcmInputError(f"{class_name} is not a {model_type!r} model; the checkpoint's metadata is inconsistent")
    d = dict(config_dict)
    d.pop("model_type")
    try:
        config = transformers.AutoConfig.for_model(model_type, **d)
        return cls._from_config(config).float().eval()
    except Exception as e:  # values of the right type can still be inconsistent (heads vs width)
        raise AcmInputError(f"the {class_name} in the checkpoint could not be built: {_first_line(e)}") from None


def known_hf_families() -> set:
    """Model types of the transformers families an adapter is registered for."""
    from acmtool.adapters._registry import registered_class_names
    families = set()
    for name in registered_class_names():
        parts = name.split(".")
        if len(parts) == 5 and parts[:2] == ["transformers", "models"] and parts[3] == f"modeling_{parts[2]}":
            families.add(parts[2])
    return families


# --- CTranslate2 Whisper folders (faster-whisper's format) -----------------------------------------
CT2_WHISPER_CLASS = "WhisperForConditionalGeneration"


def _is_ct2(path: Path) -> bool:
    """A folder holding a CTranslate2 model.bin, or that model.bin itself: known by its header, which
    a pickle or a Hugging Face pytorch_model.bin never parses as."""
    from acmtool.io.ct2_whisper import read_ct2_spec_name
    model_bin = path / "model.bin" if path.is_dir() else path
    return model_bin.name == "model.bin" and model_bin.is_file() and read_ct2_spec_name(model_bin) is not None


def _ct2_source(text: str, arch: Optional[str]) -> LoadedModel:
    if not text:  # Path("") would be the working directory
        raise AcmInputError("ct2: needs the model folder: ct2:PATH/TO/FOLDER")
    if arch:
        raise AcmInputError(f"{text}: a CTranslate2 model holds its architecture; --arch is only for state dicts")
    path = Path(text)
    return _ct2_folder(path.parent if path.name == "model.bin" else path)


def _ct2_folder(folder: Path) -> LoadedModel:
    from acmtool.io.ct2_whisper import SPEC_NAME, load_ct2_whisper, read_ct2_spec_name
    if not folder.is_dir():
        raise AcmInputError(f"{folder}: no such folder; ct2: takes a CTranslate2 model folder (model.bin, "
                            f"config.json, vocabulary)")
    model_bin = folder / "model.bin"
    if not model_bin.is_file():
        raise AcmInputError(f"{folder} has no model.bin: not a CTranslate2 model folder")
    name = read_ct2_spec_name(model_bin)
    if name is None:
        raise AcmInputError(f"{model_bin} is not a CTranslate2 model (its header is not CTranslate2's)")
    if name != SPEC_NAME:
        raise AcmInputError(f"{model_bin} is a CTranslate2 {name} model; acmtool reads only CTranslate2 Whisper "
                            f"models ({SPEC_NAME}); convert the original Hugging Face model instead")
    digests = _ct2_digests(folder)  # before reading: the digest is of what was loaded, not of a later edit
    model = load_ct2_whisper(folder)
    spec = {"kind": "ct2", "path": str(folder.resolve()), "sha256": digests, "config": model.config.to_dict()}
    return LoadedModel(model, spec)


def _ct2_digests(folder: Path) -> dict:
    from acmtool.io.ct2_whisper import ct2_whisper_files
    return {name: file_sha256(folder / name) for name in ct2_whisper_files(folder) if (folder / name).is_file()}


def _ct2_original(spec: dict) -> nn.Module:
    """The folder's model, once every file it is read from is the one recorded."""
    from acmtool.io.ct2_whisper import ct2_whisper_files, load_ct2_whisper
    folder = Path(spec["path"])
    if not (folder / "model.bin").is_file():
        raise AcmInputError(f"the original CTranslate2 folder {folder} is gone; it is needed to compare against")
    recorded = spec["sha256"]
    if sorted(ct2_whisper_files(folder)) != sorted(recorded):  # e.g. a vocabulary.json put beside the .txt
        raise AcmInputError(f"{folder} has changed since the checkpoint was written (it now holds "
                            f"{', '.join(ct2_whisper_files(folder))}, the checkpoint recorded "
                            f"{', '.join(sorted(recorded))}); restore the original folder")
    for name, digest in recorded.items():
        check_file(folder / name)
        check_sha256(folder / name, digest, f"the {name} this checkpoint was converted from")
    return load_ct2_whisper(folder)


def _module_spec(obj: nn.Module, path: Path) -> dict:
    spec = user_spec(obj)
    if spec["kind"] == "hf":
        return spec
    return {"kind": "file", "path": str(path.resolve()), "sha256": file_sha256(path)}


def _record_weights(spec: dict, path: Path) -> None:
    """Where the original weights are, and their digest, so eval reloads exactly those."""
    spec["weights"] = str(path.resolve())
    spec["weights_sha256"] = file_sha256(path)


def _with_arch(path: Path, arch: Optional[str], state: dict, trust_pickle: bool) -> LoadedModel:
    if not arch:
        raise AcmInputError(f"{path} holds a state dict, not a model; say which architecture with --arch "
                            f"(timm:NAME or a Hugging Face model folder)")
    if arch.startswith("timm:"):
        loaded = _timm(arch[5:], {})
    elif Path(arch).is_dir():
        loaded = _hf_folder(Path(arch), with_weights=False)
    else:
        raise AcmInputError(f"--arch {arch!r}: give timm:NAME or a Hugging Face model folder")
    _load_state(loaded.model, state, str(path))
    _record_weights(loaded.spec, path)
    return loaded


# --- files -------------------------------------------------------------------------------
def check_file(path: Path) -> None:
    """An existing, non-empty regular file, or an AcmInputError saying which it is not."""
    if not path.exists():
        raise AcmInputError(f"{path}: no such file")
    if not path.is_file():
        raise AcmInputError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise AcmInputError(f"{path}: the file is empty")


def _is_acm_checkpoint(path: Path) -> bool:
    return (safetensors_metadata(path) or {}).get("format") == CHECKPOINT_FORMAT


def safetensors_metadata(path: Path) -> Optional[dict]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata()
    except Exception as e:
        raise AcmInputError(f"{path}: not a valid .safetensors file ({_first_line(e)})") from None


def _read_state_dict(path: Path, trust_pickle: bool) -> dict:
    check_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as e:
            raise AcmInputError(f"{path}: not a valid .safetensors file ({_first_line(e)})") from None
    return _as_state_dict(load_untrusted(path, trust_pickle), path)


def _as_state_dict(obj, path) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
            return obj
    raise AcmInputError(f"{path}: holds neither a module nor a state dict of tensors ({type(obj).__name__})")


def _load_state(model: nn.Module, state: dict, where: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
        return
    except RuntimeError as first:
        filtered = _timm_filter(model, state)
        if filtered is not None:
            try:
                model.load_state_dict(filtered, strict=True)
                return
            except RuntimeError:
                pass
        raise AcmInputError(f"{where}: the weights do not fit the architecture: {_mismatch(first)}") from None


def _timm_filter(model, state):
    """timm's own checkpoint_filter_fn adapts released weights (for example other resolutions)."""
    if not type(model).__module__.startswith("timm."):
        return None
    import importlib
    fn = getattr(importlib.import_module(type(model).__module__), "checkpoint_filter_fn", None)
    try:
        return fn(state, model) if fn else None
    except Exception:
        return None


def _mismatch(e: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " ".join(lines[1:3])[:300] if len(lines) > 1 else lines[0][:300]


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:300]


# --- example inputs for the FLOPs profile ----------------------------------------------------
def example_inputs(model: nn.Module, spec: dict):
    """One typical input (batch 1) for the whole-model FLOPs, or None when unknown."""
    if spec.get("kind") == "hf" or hasattr(model, "config"):
        return _hf_example(model, spec) if hasattr(model, "config") else None
    pe = getattr(model, "patch_embed", None)
    if pe is not None and getattr(pe, "img_size", None) is not None:
        return torch.randn(1, pe.proj.in_channels, *pe.img_size)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "input_size" in cfg:
        return torch.randn(1, *cfg["input_size"])
    return None


def _hf_example(model: nn.Module, spec: dict):
    config = model.config
    kind = getattr(config, "model_type", "")
    if kind in ("vit", "deit", "dinov2"):
        # the size the folder's image processor feeds the model: DINOv2's config says 518 (its position
        # embeddings' grid) while its processor resizes to 224, and FLOPs follow the tokens
        from acmtool.data.preprocess import image_prep
        try:
            size = image_prep(model, spec).size
        except AcmInputError:
            size = None
        size = tuple(size) if size else (config.image_size, config.image_size)
        return {"pixel_values": torch.randn(1, config.num_channels, *size)}
    if kind == "wav2vec2":  # the mask where the feature encoder is layer-normed, as its extractor gives one
        masked = getattr(config, "feat_extract_norm", None) == "layer"
        return {"input_values": torch.randn(1, 16000),
                **({"attention_mask": torch.ones(1, 16000, dtype=torch.long)} if masked else {})}
    if kind == "whisper":
        return {"input_features": torch.randn(1, config.num_mel_bins, 2 * config.max_source_positions),
                "decoder_input_ids": torch.full((1, 1), config.decoder_start_token_id or 0)}
    seq = min(128, getattr(config, "max_position_embeddings", 128))
    vocab = getattr(config, "vocab_size", 1000)
    return {"input_ids": torch.randint(0, vocab, (1, seq)), "attention_mask": torch.ones(1, seq, dtype=torch.long)}


def spec_to_json(spec: dict) -> str:
    return json.dumps(spec, default=str)
