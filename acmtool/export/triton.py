"""A Triton Inference Server model repository for an exported model (`acmtool export --triton-repo`).

    REPO/NAME/config.pbtxt           platform onnxruntime_onnx, inputs and outputs, dynamic batching,
                                     model_operations naming the library (custom-op models)
    REPO/NAME/libacmtool_ops.so      the custom-op library, copied beside the model
    REPO/NAME/1/model.onnx           the model (and its external data file, if it has one)

Triton's onnxruntime backend hands op_library_filename to ONNX Runtime as it is, so it must be the
path the *server* sees: `mount` is where the server finds REPO (`docker run -v REPO:/models ...
tritonserver --model-repository=/models`: the default "/models"). The library must load into the
server's onnxruntime: it needs ORT API `ort_api` or newer (`acmtool library-path --info`).

The budget input (an initializer that may be fed) is left out of the config: Triton serves the model
at its exported budget. The config is checked against Triton's model-config schema (ModelConfig of
model_config.proto, from the tritonclient package) when tritonclient is installed.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from acmtool.errors import AcmInputError
from acmtool.io.atomic import replace_folder
from acmtool.io.outputs import external_data_path

# ONNX TensorProto element types -> Triton data types (model_config.proto DataType)
_TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64",
                 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _tensors(values, skip=()) -> list[dict]:
    out = []
    for v in values:
        if v.name in skip:
            continue
        t = v.type.tensor_type
        if t.elem_type not in _TRITON_TYPES:
            raise AcmInputError(f"{v.name}: ONNX element type {t.elem_type} has no Triton data type")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        out.append({"name": v.name, "data_type": _TRITON_TYPES[t.elem_type], "dims": dims})
    return out


def _block(kind: str, tensors: list[dict], batched: bool) -> str:
    rows = []
    for t in tensors:
        dims = t["dims"][1:] if batched else t["dims"]
        rows.append(f'  {{\n    name: "{t["name"]}"\n    data_type: {t["data_type"]}\n'
                    f'    dims: [ {", ".join(str(d) for d in dims) or "1"} ]\n'
                    + ('    reshape: { shape: [ ] }\n' if not dims else "") + "  }")
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def config_text(onnx_path, name: str, max_batch_size: int, library: Optional[str], cuda: bool) -> str:
    """config.pbtxt for the model at onnx_path. Batched (max_batch_size > 0) when every input and
    output has a dynamic first axis; Triton then leaves that axis out of dims."""
    import onnx
    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    knobs = {i.name for i in g.initializer}  # inputs with a default (the budget): not in the config
    inputs, outputs = _tensors(g.input, skip=knobs), _tensors(g.output)
    batched = max_batch_size > 0 and all(t["dims"] and t["dims"][0] == -1 for t in inputs + outputs)
    text = (f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size if batched else 0}\n'
            + _block("input", inputs, batched) + _block("output", outputs, batched))
    if batched:
        text += "dynamic_batching { }\n"
    # The library's CUDA kernel exists only in CUDA builds; a CPU-only library keeps the model on CPU.
    text += f"instance_group [\n  {{\n    kind: {'KIND_GPU' if cuda else 'KIND_CPU'}\n    count: 1\n  }}\n]\n"
    if library:
        text += f'model_operations {{\n  op_library_filename: "{library}"\n}}\n'
    return text


def _model_config_class():
    """tritonclient's ModelConfig message, loaded from its model_config_pb2.py alone: the package's
    grpc/__init__ wants grpcio, which a schema check does not need."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        return None
    module_spec = importlib.util.spec_from_file_location("acmtool_triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ModelConfig


def validate_config(text: str):
    """Parse config.pbtxt text as Triton's ModelConfig; returns the message, None when tritonclient
    is not installed; AcmInputError on a field or value the schema does not have."""
    cls = _model_config_class()
    if cls is None:
        return None
    from google.protobuf import text_format
    try:
        return text_format.Parse(text, cls())
    except text_format.ParseError as e:
        raise AcmInputError(f"config.pbtxt does not match Triton's model-config schema: {e}") from None


def check_request(onnx_path, repo, name: Optional[str], max_batch_size: int, force: bool, whisper: bool) -> str:
    """The model's name in the repository, after the checks a request can fail (run before any export
    work, and again when writing): a Whisper folder, a bad name or batch size, an existing model."""
    if whisper:
        raise AcmInputError("Triton repositories of Whisper models (an encoder and decoder graphs driven by a "
                            "decoding loop) are not supported yet: export the folder and run it with acmtool "
                            "transcribe")
    name = name or Path(onnx_path).name.split(".")[0]
    if not _NAME.match(name):
        raise AcmInputError(f"Triton model name {name!r}: use letters, digits, '_', '.' and '-' only")
    if max_batch_size < 0:
        raise AcmInputError(f"--triton-max-batch {max_batch_size}: must be 0 (no batching) or more")
    folder = Path(repo) / name
    if folder.exists() and not force:
        raise AcmInputError(f"{folder} already exists: pass --force to replace it, or choose another --triton-name")
    return name


def write_triton_repo(onnx_path, repo, name: Optional[str] = None, max_batch_size: int = 8,
                      mount: str = "/models", force: bool = False) -> dict:
    """Add the model at onnx_path to the Triton repository `repo` as `name` (default: the file's name
    up to its first dot), whole or not at all; returns {"folder", "config", "validated"}."""
    from acmtool.runtime.library import library_info
    from acmtool.runtime.model_header import read_header
    onnx_path = Path(onnx_path)
    name = check_request(onnx_path, repo, name, max_batch_size, force, whisper=onnx_path.is_dir())
    repo = Path(repo)
    folder = repo / name
    uses_op = "ai.acmtool" in read_header(onnx_path).opsets
    info = library_info() if uses_op else None
    library = f"{mount.rstrip('/')}/{name}/{Path(info['path']).name}" if info else None
    text = config_text(onnx_path, name, max_batch_size, library, cuda=bool(info and info["cuda"]))
    validated = validate_config(text) is not None
    repo.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=repo))
    try:
        (tmp / "1").mkdir()
        shutil.copy2(onnx_path, tmp / "1" / "model.onnx")
        data = external_data_path(onnx_path)  # keeps the name the model records
        if data.is_file():
            shutil.copy2(data, tmp / "1" / data.name)
        if info:
            shutil.copy2(info["path"], tmp / Path(info["path"]).name)
        (tmp / "config.pbtxt").write_text(text)
        tmp.chmod(0o755)
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"folder": folder, "config": folder / "config.pbtxt", "validated": validated, "library": library}
