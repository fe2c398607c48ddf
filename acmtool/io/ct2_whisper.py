"""Whisper in CTranslate2's format (the folder faster-whisper loads: model.bin, config.json,
vocabulary.txt or .json, tokenizer.json) rebuilt as Hugging Face `WhisperForConditionalGeneration`,
in fp32, with the same function. Token ids come from the vocabulary file, as in CTranslate2;
tokenizer.json is left to whoever decodes the ids.

model.bin (binary versions 2-6, little-endian; see CTranslate2's model_spec.py `_serialize`):

    u32 binary_version | str spec_name | u32 spec_revision | u32 num_variables
    num_variables x ( str name | u8 rank | u32 dims[rank] | u8 dtype_id | u32 num_bytes | bytes )
    u32 num_aliases | num_aliases x ( str alias | str target )      (binary version >= 3)

where `str` is a u16 length (counting a trailing NUL) followed by that many bytes. Versions below
4 stored an item size instead of a dtype id and a count instead of a byte size.

The file is untrusted: every length is checked against what is left of the file before it is
used, so a truncated or foreign file is refused with an AcmInputError naming it, and nothing in it
is ever unpickled or executed."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Optional

import numpy as np

from acmtool.errors import AcmInputError

MAX_BINARY_VERSION = 6
MAX_RANK = 8
MAX_VARIABLES = 100_000
# CTranslate2's DataType enum order (include/ctranslate2/types.h); bfloat16 has no numpy dtype,
# so it is read as its raw 16 bits and widened by hand.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
# Binary versions < 4 stored the item size, and these were the only types then.
_LEGACY_ITEM_SIZES = {4: np.float32, 2: np.int16, 1: np.int8}


class _Reader:
    """A cursor over the file's bytes that refuses to read past the end, naming what it wanted."""

    def __init__(self, data: bytes, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def fail(self, what: str) -> AcmInputError:
        return AcmInputError(f"{self.path}: not a usable CTranslate2 model.bin: {what}")

    def take(self, size: int, what: str) -> memoryview:
        if size < 0 or self.pos + size > len(self.data):
            raise self.fail(f"{what} needs {size} bytes at offset {self.pos}, "
                            f"the file has {len(self.data) - self.pos} left (truncated?)")
        view = memoryview(self.data)[self.pos:self.pos + size]
        self.pos += size
        return view

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def string(self, what: str) -> str:
        raw = bytes(self.take(self.u16(f"{what} length"), what))
        if not raw or raw[-1] != 0 or 0 in raw[:-1]:
            raise self.fail(f"{what} at offset {self.pos - len(raw)} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at offset {self.pos - len(raw)} is not UTF-8") from None


def read_ct2_model_bin(path) -> tuple[dict, dict[str, np.ndarray]]:
    """({"binary_version", "spec", "revision"}, {name: array}) from a model.bin, aliases resolved
    to the arrays they name. The arrays are read-only views of the file's bytes (no second copy of
    a large model); bfloat16 comes back widened to float32."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AcmInputError(f"{path}: cannot read: {e.strerror or e}") from None
    r = _Reader(data, path)
    version = r.u32("binary version")
    if not 2 <= version <= MAX_BINARY_VERSION:
        raise r.fail(f"binary version {version} (expected 2..{MAX_BINARY_VERSION})")
    header = {"binary_version": version, "spec": r.string("spec name"),
              "revision": r.u32("spec revision")}
    count = r.u32("variable count")
    if count > MAX_VARIABLES:
        raise r.fail(f"{count} variables (more than {MAX_VARIABLES})")
    variables: dict[str, np.ndarray] = {}
    for i in range(count):
        name, array = _read_variable(r, version, i)
        if name in variables:
            raise r.fail(f"variable {name!r} appears twice")
        variables[name] = array
    if version >= 3:
        _read_aliases(r, variables)
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected bytes after the last record")
    return header, variables


def read_ct2_spec_name(path) -> Optional[str]:
    """The spec name in a model.bin's header ("WhisperSpec", "TransformerSpec", ...), reading only
    the header; None when the file is not CTranslate2's (a pickle, a .bin of another format)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4 + 2 + 0xFFFF)  # u32 version, u16 length, the longest name a u16 allows
    except OSError:
        return None
    r = _Reader(head, path)
    try:
        if not 2 <= r.u32("binary version") <= MAX_BINARY_VERSION:
            return None
        return r.string("spec name")
    except AcmInputError:
        return None


def ct2_whisper_files(folder) -> list:
    """The files load_ct2_whisper reads from `folder`, so that a source's digest covers exactly them
    (the vocabulary decides the special token ids, config.json the suppressed tokens)."""
    folder = Path(folder)
    vocabulary = "vocabulary.json" if (folder / "vocabulary.json").exists() else "vocabulary.txt"
    return ["model.bin", "config.json", vocabulary]


def _read_variable(r: _Reader, version: int, index: int) -> tuple[str, np.ndarray]:
    name = r.string(f"name of variable {index}")
    rank = r.u8(f"rank of {name!r}")
    if rank > MAX_RANK:
        raise r.fail(f"{name!r} has rank {rank} (more than {MAX_RANK})")
    shape = tuple(r.u32(f"dimension {d} of {name!r}") for d in range(rank))
    if version >= 4:
        type_id = r.u8(f"dtype of {name!r}")
        if type_id not in _DTYPES:
            raise r.fail(f"{name!r} has unknown dtype id {type_id}")
        dtype, num_bytes = _DTYPES[type_id], r.u32(f"byte size of {name!r}")
    else:
        item_size = r.u8(f"item size of {name!r}")
        if item_size not in _LEGACY_ITEM_SIZES:
            raise r.fail(f"{name!r} has unknown item size {item_size}")
        dtype, num_bytes = _LEGACY_ITEM_SIZES[item_size], r.u32(f"size of {name!r}") * item_size
    item_size = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    expected = math.prod(shape) * item_size  # Python ints: no overflow on hostile dimensions
    if num_bytes != expected:
        raise r.fail(f"{name!r} of shape {list(shape)} declares {num_bytes} bytes, "
                     f"its shape and dtype need {expected}")
    raw = r.take(num_bytes, f"data of {name!r}")
    if dtype == "bfloat16":  # the high half of a float32
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return name, bits.view(np.float32).reshape(shape)
    return name, np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def _read_aliases(r: _Reader, variables: dict[str, np.ndarray]) -> None:
    """CTranslate2 writes a variable equal to another once, under the alphabetically first name,
    and lists the other names as aliases of it."""
    for i in range(r.u32("alias count")):
        alias, target = r.string(f"alias {i}"), r.string(f"target of alias {i}")
        if target not in variables:
            raise r.fail(f"alias {alias!r} names {target!r}, which is not a variable")
        if alias in variables:
            raise r.fail(f"alias {alias!r} is also a variable")
        variables[alias] = variables[target]


# --- Whisper --------------------------------------------------------------------------------
SPEC_NAME = "WhisperSpec"
_MAX_REVISION = 3
_GELU = 3  # CTranslate2's Activation enum: RELU, GELUTanh, SWISH, GELU, ...
_MAX_FILE = {"config.json": 1 << 20, "vocabulary.txt": 64 << 20, "vocabulary.json": 64 << 20}
# Scalars that switch CTranslate2 to something HF's Whisper does not do; these are the values under
# which both compute the same. int8 flags are booleans; a float scale_embeddings is a multiplier.
_FLAGS = {"decoder/pre_norm": 1, "decoder/alibi": 0, "decoder/alibi_use_positive_positions": 0,
          "decoder/scale_alibi": 0, "decoder/start_from_zero_embedding": 0}
# Scalars read for the config or only used by CTranslate2's word timestamps (cross-attention heads
# it averages), which greedy decoding never looks at.
_INFO = ("encoder/num_heads", "decoder/num_heads", "decoder/activation", "decoder/scale_embeddings",
         "decoder/alignment_layer", "decoder/alignment_heads")


def load_ct2_whisper(folder):
    """WhisperForConditionalGeneration (fp32, eval mode) with the function of the CTranslate2
    Whisper model in `folder`; its generation_config carries CTranslate2's suppressed tokens."""
    import torch
    from transformers import WhisperForConditionalGeneration

    folder = Path(folder)
    header, variables = read_ct2_model_bin(folder / "model.bin")
    where = folder / "model.bin"
    if header["spec"] != SPEC_NAME or header["revision"] > _MAX_REVISION:
        raise AcmInputError(f"{where}: a {header['spec']} revision {header['revision']} model, "
                            f"not a {SPEC_NAME} of revision <= {_MAX_REVISION}")
    variables = _as_float32(variables, where)
    ct2 = _read_ct2_config(folder)
    tokens = _read_vocabulary(folder)
    ids = _special_ids(tokens, variables, where)
    config = _hf_config(variables, ct2, ids, where)
    state = _hf_state_dict(variables, config, where)
    with torch.device("meta"):  # nothing random: every tensor comes from the file
        model = WhisperForConditionalGeneration(config)
    result = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                   strict=False, assign=True)
    if config.tie_word_embeddings:
        model.proj_out.weight = model.model.decoder.embed_tokens.weight
    # a tensor still on the meta device was never set: refuse rather than run it uninitialised
    left = [n for n, p in model.named_parameters(remove_duplicate=False) if p.is_meta]
    left += [n for n, b in model.named_buffers() if b.is_meta]
    if left or result.unexpected_keys:  # a transformers whose Whisper this mapping does not know
        raise AcmInputError(f"{where}: this transformers' Whisper does not fit the file "
                            f"(unset: {left[:5]}, unknown: {result.unexpected_keys[:5]})")
    _set_generation_config(model, ct2, ids, tokens)
    return model.eval()


def _as_float32(variables: dict[str, np.ndarray], where: Path) -> dict[str, np.ndarray]:
    """Float weights widened to fp32 (exact); int8/int16 weights dequantized with their saved
    `<name>_scale` (CTranslate2 stores round(w * scale), one scale per output row or one in all).
    Scalars keep their type: they are flags and sizes."""
    out, widened = {}, {}  # widened: by id, so that aliases stay one array (the tied projection)
    for name, value in variables.items():
        if name.endswith("_scale") and name[:-len("_scale")] in variables:
            continue
        if value.ndim == 0:
            out[name] = value
        elif value.dtype.kind == "f":
            if id(value) not in widened:
                widened[id(value)] = value.astype(np.float32)
            out[name] = widened[id(value)]
        elif value.dtype in (np.int8, np.int16):
            scale = variables.get(name + "_scale")
            if scale is None or scale.dtype.kind != "f" or scale.size not in (1, value.shape[0]):
                raise AcmInputError(f"{where}: quantized {name!r} has no usable {name}_scale")
            scale = scale.astype(np.float32).reshape((-1,) + (1,) * (value.ndim - 1))
            out[name] = value.astype(np.float32) / scale
        else:
            raise AcmInputError(f"{where}: {name!r} is a {value.dtype} array; Whisper has none")
    return out


def _read_json(folder: Path, name: str):
    path = folder / name
    try:
        if path.stat().st_size > _MAX_FILE[name]:
            raise AcmInputError(f"{path}: larger than {_MAX_FILE[name]} bytes")
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise AcmInputError(f"{path}: cannot read: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AcmInputError(f"{path}: not valid JSON ({e})") from None


def _read_ct2_config(folder: Path) -> dict:
    """config.json as CTranslate2's WhisperConfig writes it (every key optional)."""
    from acmtool.io import json_checks as J

    raw = _read_json(folder, "config.json")
    where = str(folder / "config.json")
    try:
        J.obj(raw, where, optional=("suppress_ids", "suppress_ids_begin", "lang_ids", "alignment_heads"))
        ids = {k: [J.integer(t, f"{where}: {k}[{i}]", -1, 1 << 20)
                   for i, t in enumerate(J.array(raw.get(k) or [], f"{where}: {k}", 1 << 16))]
               for k in ("suppress_ids", "suppress_ids_begin", "lang_ids")}
        heads = [[J.integer(x, f"{where}: alignment_heads[{i}]", 0, 1 << 12)
                  for x in J.array(pair, f"{where}: alignment_heads[{i}]", 2)]
                 for i, pair in enumerate(J.array(raw.get("alignment_heads") or [], where, 1 << 16))]
    except J.BadValue as e:
        raise AcmInputError(str(e)) from None
    if any(len(p) != 2 for p in heads):
        raise AcmInputError(f"{where}: alignment_heads must be [layer, head] pairs")
    return {**ids, "alignment_heads": heads}


def _read_vocabulary(folder: Path) -> list:
    """The token strings by id, from vocabulary.json or vocabulary.txt (one a line), the files
    CTranslate2 itself reads ids from."""
    if ct2_whisper_files(folder)[2] == "vocabulary.json":
        tokens = _read_json(folder, "vocabulary.json")
    else:
        path = folder / "vocabulary.txt"
        try:
            if path.stat().st_size > _MAX_FILE["vocabulary.txt"]:
                raise AcmInputError(f"{path}: larger than {_MAX_FILE['vocabulary.txt']} bytes")
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise AcmInputError(f"{path}: cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise AcmInputError(f"{path}: not UTF-8 ({e})") from None
        # split on "\n" only: str.splitlines would also split on characters BPE tokens may hold
        tokens = text.split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise AcmInputError(f"{folder}: the vocabulary is not a list of token strings")
    return tokens


def _scalar(variables: dict[str, np.ndarray], name: str, where: Path):
    value = variables.get(name)
    if value is None or value.ndim != 0:
        raise AcmInputError(f"{where}: missing the scalar {name!r}")
    return value.item()


def _shape(variables: dict[str, np.ndarray], name: str, where: Path) -> tuple:
    if name not in variables:
        raise AcmInputError(f"{where}: missing {name!r}")
    return variables[name].shape


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    n = 0
    while f"{stack}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def _check_flags(variables: dict[str, np.ndarray], where: Path) -> None:
    for name, expected in _FLAGS.items():
        if name in variables and _scalar(variables, name, where) != expected:
            raise AcmInputError(f"{where}: {name} is {variables[name].item()}, only {expected} "
                                f"is Whisper (Hugging Face has no such variant)")
    if _scalar(variables, "decoder/activation", where) != _GELU:
        raise AcmInputError(f"{where}: decoder/activation is not GELU (erf)")
    # a bool True means "multiply by sqrt(d_model)"; a float is the multiplier itself
    if "decoder/scale_embeddings" in variables:
        scale = _scalar(variables, "decoder/scale_embeddings", where)
        if scale != (1.0 if variables["decoder/scale_embeddings"].dtype.kind == "f" else 0):
            raise AcmInputError(f"{where}: decoder/scale_embeddings is {scale}; Whisper does not scale")


def _special_ids(tokens: list, variables: dict[str, np.ndarray], where: Path) -> dict:
    vocab_size = _shape(variables, "decoder/embeddings/weight", where)[0]
    if len(tokens) != vocab_size:
        raise AcmInputError(f"{where}: the vocabulary has {len(tokens)} tokens, the embeddings {vocab_size}")
    index = {t: i for i, t in enumerate(tokens)}
    names = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>", "notimestamps": "<|notimestamps|>",
             "transcribe": "<|transcribe|>", "translate": "<|translate|>", "startofprev": "<|startofprev|>"}
    missing = [tok for tok in names.values() if tok not in index]
    if missing:
        raise AcmInputError(f"{where}: the vocabulary lacks {', '.join(missing)}: not Whisper's")
    return {key: index[tok] for key, tok in names.items()}


def _hf_config(variables: dict[str, np.ndarray], ct2: dict, ids: dict, where: Path):
    """The WhisperConfig whose model has exactly these variables' shapes."""
    from transformers import WhisperConfig

    _check_flags(variables, where)
    d_model, num_mel_bins, _ = _shape(variables, "encoder/conv1/weight", where)
    vocab_size = _shape(variables, "decoder/embeddings/weight", where)[0]
    proj, emb = variables.get("decoder/projection/weight"), variables["decoder/embeddings/weight"]
    config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=num_mel_bins, d_model=d_model,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=int(_scalar(variables, "encoder/num_heads", where)),
        decoder_attention_heads=int(_scalar(variables, "decoder/num_heads", where)),
        encoder_ffn_dim=_shape(variables, "encoder/layer_0/ffn/linear_0/weight", where)[0],
        decoder_ffn_dim=_shape(variables, "decoder/layer_0/ffn/linear_0/weight", where)[0],
        max_source_positions=_shape(variables, "encoder/position_encodings/encodings", where)[0],
        max_target_positions=_shape(variables, "decoder/position_encodings/encodings", where)[0],
        activation_function="gelu", scale_embedding=False,
        # CTranslate2 writes an output projection equal to the embeddings as an alias of them
        tie_word_embeddings=proj is None or proj is emb or np.array_equal(proj, emb),
        decoder_start_token_id=ids["sot"], eos_token_id=ids["eot"], pad_token_id=ids["eot"],
        bos_token_id=ids["eot"], suppress_tokens=ct2["suppress_ids"],
        begin_suppress_tokens=ct2["suppress_ids_begin"])
    if d_model % config.encoder_attention_heads or d_model % config.decoder_attention_heads:
        raise AcmInputError(f"{where}: width {d_model} does not split into the heads")
    return config


def _hf_state_dict(variables: dict[str, np.ndarray], config, where: Path) -> dict[str, np.ndarray]:
    """Every HF tensor from its CTranslate2 variable; refuses a variable it would leave unused."""
    m = _Mapper(variables, config.d_model, where)
    d = config.d_model
    m.conv("encoder/conv1", "model.encoder.conv1", (d, config.num_mel_bins, 3))
    m.conv("encoder/conv2", "model.encoder.conv2", (d, d, 3))
    m.copy("encoder/position_encodings/encodings", "model.encoder.embed_positions.weight",
           (config.max_source_positions, d))
    m.norm("encoder/layer_norm", "model.encoder.layer_norm")
    for i in range(config.encoder_layers):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        m.attention(f"{c}/self_attention", f"{h}.self_attn", f"{h}.self_attn_layer_norm", cross=False)
        m.ffn(f"{c}/ffn", h, config.encoder_ffn_dim)
    m.copy("decoder/embeddings/weight", "model.decoder.embed_tokens.weight", (config.vocab_size, d))
    m.copy("decoder/position_encodings/encodings", "model.decoder.embed_positions.weight",
           (config.max_target_positions, d))
    m.norm("decoder/layer_norm", "model.decoder.layer_norm")
    for i in range(config.decoder_layers):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        m.attention(f"{c}/self_attention", f"{h}.self_attn", f"{h}.self_attn_layer_norm", cross=False)
        m.attention(f"{c}/attention", f"{h}.encoder_attn", f"{h}.encoder_attn_layer_norm", cross=True)
        m.ffn(f"{c}/ffn", h, config.decoder_ffn_dim)
    m.projection(config)
    m.check_all_used()
    return m.state


class _Mapper:
    """Takes CTranslate2 variables by name (checking their shapes) into an HF state dict, and
    remembers which it took so that none goes silently unused."""

    def __init__(self, variables: dict[str, np.ndarray], d_model: int, where: Path):
        self.variables, self.d, self.where = variables, d_model, where
        self.used, self.state = set(), {}

    def take(self, name: str, shape: tuple) -> np.ndarray:
        value = self.variables.get(name)
        if value is None:
            raise AcmInputError(f"{self.where}: missing {name!r}")
        if value.shape != tuple(shape):
            raise AcmInputError(f"{self.where}: {name!r} has shape {list(value.shape)}, "
                                f"expected {list(shape)}")
        self.used.add(name)
        return value

    def copy(self, ct2: str, hf: str, shape: tuple) -> None:
        self.state[hf] = self.take(ct2, shape)

    def conv(self, ct2: str, hf: str, shape: tuple) -> None:
        self.copy(f"{ct2}/weight", f"{hf}.weight", shape)
        self.copy(f"{ct2}/bias", f"{hf}.bias", shape[:1])

    def norm(self, ct2: str, hf: str) -> None:
        self.copy(f"{ct2}/gamma", f"{hf}.weight", (self.d,))
        self.copy(f"{ct2}/beta", f"{hf}.bias", (self.d,))

    def linear(self, ct2: str, hf: str, out: int, inp: int) -> None:
        self.copy(f"{ct2}/weight", f"{hf}.weight", (out, inp))
        self.copy(f"{ct2}/bias", f"{hf}.bias", (out,))

    def fused(self, ct2: str, hf: str, parts: tuple) -> None:
        """CTranslate2 stacks q, k, v (self-attention) or k, v (cross-attention) in one linear, in
        that order along the output rows. HF's k_proj has no bias, and needs none: q.(k + b) adds
        the same q.b to every key's score, which softmax cancels; CTranslate2 stores zeros there."""
        d = self.d
        weight = self.take(f"{ct2}/weight", (len(parts) * d, d))
        bias = self.take(f"{ct2}/bias", (len(parts) * d,))
        for j, part in enumerate(parts):
            self.state[f"{hf}.{part}.weight"] = weight[j * d:(j + 1) * d]
            if part != "k_proj":
                self.state[f"{hf}.{part}.bias"] = bias[j * d:(j + 1) * d]

    def attention(self, ct2: str, hf: str, hf_norm: str, cross: bool) -> None:
        # self-attention: linear_0 = qkv, linear_1 = out; cross: linear_0 = q, linear_1 = kv (of
        # the encoder output), linear_2 = out. layer_norm is the pre-norm of this sub-block.
        if cross:
            self.linear(f"{ct2}/linear_0", f"{hf}.q_proj", self.d, self.d)
            self.fused(f"{ct2}/linear_1", hf, ("k_proj", "v_proj"))
        else:
            self.fused(f"{ct2}/linear_0", hf, ("q_proj", "k_proj", "v_proj"))
        self.linear(f"{ct2}/linear_{2 if cross else 1}", f"{hf}.out_proj", self.d, self.d)
        self.norm(f"{ct2}/layer_norm", hf_norm)

    def ffn(self, ct2: str, hf: str, width: int) -> None:
        self.linear(f"{ct2}/linear_0", f"{hf}.fc1", width, self.d)
        self.linear(f"{ct2}/linear_1", f"{hf}.fc2", self.d, width)
        self.norm(f"{ct2}/layer_norm", f"{hf}.final_layer_norm")

    def projection(self, config) -> None:
        """The output projection: the embeddings themselves (an alias in the file) or its own."""
        name = "decoder/projection/weight"
        if name not in self.variables or config.tie_word_embeddings:
            self.used.add(name)
            self.state["proj_out.weight"] = self.state["model.decoder.embed_tokens.weight"]
        else:
            self.copy(name, "proj_out.weight", (config.vocab_size, self.d))
        bias = "decoder/projection/bias"
        # HF's proj_out has no bias; a zero one is the same function
        if bias in self.variables and np.any(self.take(bias, (config.vocab_size,))):
            raise AcmInputError(f"{self.where}: the output projection has a bias; "
                                "Hugging Face's Whisper has none")

    def check_all_used(self) -> None:
        left = sorted(set(self.variables) - self.used - set(_FLAGS) - set(_INFO))
        if left:
            raise AcmInputError(f"{self.where}: {len(left)} variables this reader does not know "
                                f"(a Whisper variant?): {', '.join(left[:5])}")


def _set_generation_config(model, ct2: dict, ids: dict, tokens: list) -> None:
    """What transformers' generate needs to decode like CTranslate2 (greedy, no timestamps)."""
    g = model.generation_config
    g.decoder_start_token_id = ids["sot"]
    g.eos_token_id = g.pad_token_id = ids["eot"]
    g.suppress_tokens = list(ct2["suppress_ids"])
    g.begin_suppress_tokens = list(ct2["suppress_ids_begin"])
    g.no_timestamps_token_id = ids["notimestamps"]
    g.prev_sot_token_id = ids["startofprev"]
    g.alignment_heads = ct2["alignment_heads"]
    g.max_length = model.config.max_target_positions
    g.forced_decoder_ids = None
    # CTranslate2 calls a model multilingual when its vocabulary has the 51865 tokens of those
    g.is_multilingual = model.config.vocab_size >= 51865
    if g.is_multilingual:  # what generate(language=..., task=...) looks up
        g.task_to_id = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
        g.lang_to_id = {tokens[i]: i for i in ct2["lang_ids"] if 0 <= i < len(tokens)}
