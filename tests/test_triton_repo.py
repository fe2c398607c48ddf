"""`acmtool export --triton-repo`: a Triton model repository whose config.pbtxt passes Triton's own
model-config schema (tritonclient's ModelConfig), with the library beside the model; the model in it
runs in ONNX Runtime with that copied library, as Triton's onnxruntime backend would load it. No Triton
server runs here."""
import filecmp

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

import acmtool
from acmtool.cli.main import cli
from acmtool.errors import AcmInputError
from acmtool.export.triton import config_text, validate_config, write_triton_repo
from acmtool.io.sources import load_model
from acmtool.layers.control import apply_static_k

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=7)


def schema_or_skip():
    if validate_config('name: "x"') is None:
        pytest.skip("tritonclient is not installed (make install puts it in .venv): no schema to check against")


def vit(static=False):
    loaded = load_model("timm:vit_tiny_patch16_224", model_kwargs=VIT)
    acmtool.acmize_(loaded.model, acmtool.AcmConfig())
    model = loaded.model.eval()
    model.acmtool_info["source"] = loaded.spec
    if static:
        model.acmtool_info.update(static=True, budget=0.5)
        apply_static_k(model, 0.5)
    else:
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _, m in acmtool.layers.acm_modules(model):
                m.gate.fc2.weight.copy_(torch.randn(m.gate.fc2.weight.shape, generator=g) * 2)
    return model


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def library():
    from acmtool.runtime import library_path
    try:
        return library_path()
    except AcmInputError as e:
        pytest.skip(f"custom-op library not built: {e}")


def test_export_writes_a_repository_triton_accepts(tmp_path, library):
    schema_or_skip()
    ckpt = acmtool.save(vit(), tmp_path / "vit.acm.safetensors")
    repo = tmp_path / "repo"
    r = run("export", ckpt, "--triton-repo", repo)
    assert r.exit_code == 0, r.output
    assert "checked against Triton's model-config schema" in r.output
    folder = repo / "vit"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "libacmtool_ops.so"]
    config = validate_config((folder / "config.pbtxt").read_text())
    assert config.name == "vit" and config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [3, 32, 32])]  # batch axis left out
    assert [(o.name, list(o.dims)) for o in config.output] == [("output", [7])]
    assert config.HasField("dynamic_batching")
    assert list(config.model_operations.op_library_filename) == ["/models/vit/libacmtool_ops.so"]
    assert filecmp.cmp(folder / "libacmtool_ops.so", library, shallow=False)
    # the model, run as the backend runs it: ORT with the library the config names (here: the copy)
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(folder / "libacmtool_ops.so"))
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    served = ort.InferenceSession(str(folder / "1" / "model.onnx"), options).run(None, {"input": x})[0]
    exported = acmtool.runtime.session(tmp_path / "vit.acm.onnx").run(None, {"input": x})[0]
    np.testing.assert_array_equal(served, exported)


def test_static_models_need_no_library_and_names_and_mounts_are_kept(tmp_path):
    schema_or_skip()
    ckpt = acmtool.save(vit(static=True), tmp_path / "s.acm.safetensors")
    r = run("export", ckpt, "--triton-repo", tmp_path / "repo", "--triton-name", "vit-static",
            "--triton-max-batch", "32", "--triton-mount", "/srv/models/")
    assert r.exit_code == 0, r.output
    folder = tmp_path / "repo" / "vit-static"
    config = validate_config((folder / "config.pbtxt").read_text())
    assert config.max_batch_size == 32 and not config.HasField("model_operations")
    assert not (folder / "libacmtool_ops.so").exists()
    assert ort.InferenceSession(str(folder / "1" / "model.onnx")).get_inputs()[0].name == "input"  # stock ORT


def test_an_existing_model_folder_is_kept_unless_force_and_a_failure_leaves_nothing(tmp_path, library, monkeypatch):
    path = acmtool.export.export_onnx(vit(), tmp_path / "m.acm.onnx", torch.randn(2, 3, 32, 32))
    repo = tmp_path / "repo"
    write_triton_repo(path, repo)
    with pytest.raises(AcmInputError, match="already exists: pass --force"):
        write_triton_repo(path, repo)
    before = (repo / "m" / "config.pbtxt").read_text()
    import acmtool.export.triton as triton

    def broken_copy(src, dst, **kw):
        raise OSError("disk full")
    monkeypatch.setattr(triton.shutil, "copy2", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        write_triton_repo(path, repo, force=True)
    assert sorted(p.name for p in repo.iterdir()) == ["m"]  # no half-written folder beside it
    assert (repo / "m" / "config.pbtxt").read_text() == before  # the old model is untouched
    monkeypatch.undo()
    write_triton_repo(path, repo, max_batch_size=4, force=True)
    assert "max_batch_size: 4" in (repo / "m" / "config.pbtxt").read_text()


def test_a_refused_request_costs_no_export(tmp_path):
    ckpt = acmtool.save(vit(static=True), tmp_path / "s.acm.safetensors")
    (tmp_path / "repo" / "s").mkdir(parents=True)
    r = CliRunner().invoke(cli, ["export", str(ckpt), "--triton-repo", str(tmp_path / "repo")])
    assert r.exit_code == 2 and "already exists: pass --force" in r.output, r.output
    r = CliRunner().invoke(cli, ["export", str(ckpt), "--triton-repo", str(tmp_path / "repo"), "--triton-name", "a/b"])
    assert r.exit_code == 2 and "use letters, digits" in r.output, r.output
    assert not (tmp_path / "s.acm.onnx").exists()  # refused before the export, which writes nothing


def test_bad_requests_are_refused(tmp_path):
    (tmp_path / "w.acm.whisper").mkdir()
    with pytest.raises(AcmInputError, match="Whisper models .* not supported"):
        write_triton_repo(tmp_path / "w.acm.whisper", tmp_path / "repo")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(AcmInputError, match="use letters, digits"):
        write_triton_repo(path, tmp_path / "repo", name="a b")


def test_config_leaves_out_inputs_with_defaults_and_unbatched_axes(tmp_path):
    """The budget knob (an input with an initializer) is not a request input; a fixed first axis
    means no batching."""
    schema_or_skip()
    budget = helper.make_tensor("budget", TensorProto.FLOAT, [], [0.5])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "budget"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "s"]),
                               helper.make_tensor_value_info("budget", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "s"])], [budget])
    path = tmp_path / "knob.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    config = validate_config(config_text(path, "knob", 8, None, cuda=False))
    assert [i.name for i in config.input] == ["x"] and list(config.input[0].dims) == [-1]
    fixed = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(fixed, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    config = validate_config(config_text(path, "fixed", 8, None, cuda=False))
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 4]
    assert not config.HasField("dynamic_batching")


def test_the_schema_check_names_what_is_wrong():
    schema_or_skip()
    with pytest.raises(AcmInputError, match="does not match Triton's model-config schema.*KIND_CPUU"):
        validate_config('name: "x"\ninstance_group [ { kind: KIND_CPUU } ]')
