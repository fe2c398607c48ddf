"""The schema of a model source spec (what rebuilds the architecture): known kinds, known keys,
architecture arguments only, bounded sizes.

A spec comes from checkpoint metadata, which is untrusted: it may name no file to load beyond the
recorded source (checked against its sha256), no class outside the known architectures, and no
constructor argument beyond the architecture's own (timm's `checkpoint_path=` or
`pretrained_cfg_overlay=`, transformers' `attn_implementation` or `auto_map` are refused).
"""
from __future__ import annotations

from acmtool.io import json_checks as J

KINDS = ("timm", "hf", "file", "ct2", "user")
SHA256 = r"[0-9a-f]{64}"
_PATH = 4096
_MAX_DEPTH = 256         # layers, blocks
_MAX_SIZE = 10_000_000   # any other integer (vocabulary, width, positions)

# timm: the arguments that shape a ViT-family architecture; never weights, files or pretrained configs.
TIMM_ARCH_ARGS = {
    "img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
    "mlp_ratio", "qkv_bias", "qk_norm", "proj_bias", "init_values", "class_token", "pos_embed", "no_embed_class",
    "reg_tokens", "pre_norm", "final_norm", "fc_norm", "dynamic_img_size", "dynamic_img_pad", "drop_rate",
    "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate", "weight_init",
    "act_layer", "norm_layer", "num_register_tokens",
}
# transformers: keys a config may not carry (remote code, kernels fetched from a hub, quantisers).
HF_REFUSED_KEYS = {"auto_map", "attn_implementation", "_attn_implementation", "quantization_config",
                   "trust_remote_code", "custom_pipelines", "_experts_implementation"}
HF_CLASS = r"[A-Z][A-Za-z0-9]{0,127}"
HF_MODEL_TYPE = r"[a-z0-9_]{1,64}"
# ct2: the files a CTranslate2 Whisper folder is read from (acmtool.io.ct2_whisper.ct2_whisper_files)
CT2_FILES = ("model.bin", "config.json")
CT2_VOCABULARIES = ("vocabulary.json", "vocabulary.txt")


def check_spec(spec, where: str = "source") -> dict:
    kind = J.obj(spec, where, required=("kind",), optional=("name", "kwargs", "weights", "weights_sha256", "class",
                                                            "config", "path", "sha256")).get("kind")
    if kind not in KINDS:
        raise J.BadValue(f"{where}.kind: {J._shown(kind)} is not one of {', '.join(KINDS)}")
    if kind == "timm":
        J.obj(spec, where, required=("kind", "name", "kwargs"), optional=("weights", "weights_sha256"))
        J.string(spec["name"], f"{where}.name", 128, r"[a-z0-9_.]+")
        check_timm_kwargs(spec["kwargs"], f"{where}.kwargs")
        _weights(spec, where)
    elif kind == "hf":
        J.obj(spec, where, required=("kind", "class", "config", "path"), optional=("weights", "weights_sha256"))
        J.string(spec["class"], f"{where}.class", 128, HF_CLASS)
        check_hf_config(spec["config"], f"{where}.config")
        J.optional(J.string, spec["path"], f"{where}.path", _PATH)
        _weights(spec, where)
    elif kind == "file":
        J.obj(spec, where, required=("kind", "path", "sha256"))
        J.string(spec["path"], f"{where}.path", _PATH)
        J.string(spec["sha256"], f"{where}.sha256", 64, SHA256)
    elif kind == "ct2":
        _ct2(spec, where)
    else:
        J.obj(spec, where, required=("kind", "class"))
        J.string(spec["class"], f"{where}.class", 512)
    return spec


def _ct2(spec: dict, where: str) -> None:
    """A CTranslate2 Whisper folder: its path, a digest of each file read from it, the HF config."""
    J.obj(spec, where, required=("kind", "path", "sha256", "config"))
    J.string(spec["path"], f"{where}.path", _PATH)
    digests = J.obj(spec["sha256"], f"{where}.sha256", required=CT2_FILES, optional=CT2_VOCABULARIES)
    if sum(name in digests for name in CT2_VOCABULARIES) != 1:
        raise J.BadValue(f"{where}.sha256: expected the digest of one vocabulary file "
                         f"({' or '.join(CT2_VOCABULARIES)})")
    for name, digest in digests.items():
        J.string(digest, f"{where}.sha256.{name}", 64, SHA256)
    check_hf_config(spec["config"], f"{where}.config")
    if spec["config"]["model_type"] != "whisper":  # the only CTranslate2 model acmtool reads
        raise J.BadValue(f"{where}.config.model_type: {J._shown(spec['config']['model_type'])} is not whisper")


def _weights(spec: dict, where: str) -> None:
    J.optional(J.string, spec.get("weights"), f"{where}.weights", _PATH)
    J.optional(J.string, spec.get("weights_sha256"), f"{where}.weights_sha256", 64, SHA256)


def check_timm_kwargs(kwargs, where: str = "kwargs") -> dict:
    J.obj(kwargs, where, optional=TIMM_ARCH_ARGS)
    for key, value in kwargs.items():
        _plain(value, f"{where}.{key}", _MAX_DEPTH if key == "depth" else _MAX_SIZE, nested=False)
    return kwargs


def check_hf_config(config, where: str = "config") -> dict:
    if not isinstance(config, dict):
        raise J.BadValue(f"{where}: expected an object, got {J._kind(config)}")
    J.string(config.get("model_type"), f"{where}.model_type", 64, HF_MODEL_TYPE)
    if len(config) > 1024:
        raise J.BadValue(f"{where}: {len(config)} keys is more than a model config holds")
    for key, value in config.items():
        if key in HF_REFUSED_KEYS or (key.startswith("_") and key != "_name_or_path"):
            raise J.BadValue(f"{where}.{key}: not allowed in a checkpoint (it can load code or fetch files)")
        J.string(key, f"{where} key", 128)
        limit = _MAX_DEPTH if ("layers" in key or key == "depth") else _MAX_SIZE
        _plain(value, f"{where}.{key}", limit, nested=True)
    return config


def _plain(value, where: str, limit: int, nested: bool) -> None:
    """A JSON scalar (integers within `limit`), or a bounded list or flat object of them."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        J.integer(value, where, -limit, limit)
    elif isinstance(value, float):
        J.number(value, where, -1e9, 1e9)
    elif isinstance(value, str):
        J.string(value, where, 1024)
    elif isinstance(value, list):
        for i, item in enumerate(J.array(value, where, 100_000)):
            if isinstance(item, (list, dict)):
                raise J.BadValue(f"{where}[{i}]: nested lists and objects are not allowed here")
            _plain(item, f"{where}[{i}]", limit, nested=False)
    elif isinstance(value, dict) and nested:
        if len(value) > 100_000:
            raise J.BadValue(f"{where}: {len(value)} entries is too many")
        for k, item in value.items():
            if not isinstance(k, int):  # id2label has integer keys until it goes through JSON
                J.string(k, f"{where} key", 256)
            if isinstance(item, (list, dict)):
                raise J.BadValue(f"{where}.{k}: nested lists and objects are not allowed here")
            _plain(item, f"{where}.{k}", limit, nested=False)
    else:
        raise J.BadValue(f"{where}: {J._kind(value)} is not allowed here")
