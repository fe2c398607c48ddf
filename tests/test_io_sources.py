"""Loading models: every source DESIGN.md names, and every bad file a clear AcmInputError."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from acmtool.errors import AcmInputError
from acmtool.io.sources import build_from_spec, example_inputs, load_model


def test_timm_name_and_weights(tmp_path, tiny_vit):
    state = {k: v.contiguous() for k, v in tiny_vit.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "w.pth")
    for f in ("w.safetensors", "w.pth"):
        loaded = load_model("timm:test_vit", weights=str(tmp_path / f))
        digest = __import__("hashlib").sha256((tmp_path / f).read_bytes()).hexdigest()
        assert loaded.spec == {"kind": "timm", "name": "test_vit", "kwargs": {}, "weights": str(tmp_path / f),
                               "weights_sha256": digest}
        x = torch.randn(1, 3, 160, 160)
        torch.testing.assert_close(loaded.model(x), tiny_vit(x))


def test_timm_errors(tmp_path, tiny_vit):
    with pytest.raises(AcmInputError, match="timm has no model 'no_such_vit'"):
        load_model("timm:no_such_vit")
    wrong = {k: v for k, v in tiny_vit.state_dict().items() if "head" not in k}
    save_file({k: v.contiguous() for k, v in wrong.items()}, tmp_path / "wrong.safetensors")
    with pytest.raises(AcmInputError, match="do not fit the architecture"):
        load_model("timm:test_vit", weights=str(tmp_path / "wrong.safetensors"))


def test_whole_module_pickle_loads_with_allow_list(tmp_path, tiny_vit):
    torch.save(tiny_vit, tmp_path / "vit.pt")
    loaded = load_model(str(tmp_path / "vit.pt"))
    assert loaded.spec["kind"] == "file"
    x = torch.randn(1, 3, 160, 160)
    torch.testing.assert_close(loaded.model(x), tiny_vit(x))
    rebuilt = build_from_spec(loaded.spec)
    assert type(rebuilt) is type(tiny_vit)


class Foreign(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


class Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_foreign_and_malicious_pickles_are_refused(tmp_path):
    torch.save(Foreign(), tmp_path / "foreign.pt")
    with pytest.raises(AcmInputError, match="--trust-pickle"):
        load_model(str(tmp_path / "foreign.pt"))
    assert isinstance(load_model(str(tmp_path / "foreign.pt"), trust_pickle=True).model, Foreign)

    marker = tmp_path / "pwned"
    evil = Evil()
    evil.marker = marker
    torch.save({"x": evil}, tmp_path / "evil.pt")
    with pytest.raises(AcmInputError, match="--trust-pickle"):
        load_model(str(tmp_path / "evil.pt"))
    assert not marker.exists(), "the refused pickle must not have run"

    with open(tmp_path / "legacy.pt", "wb") as f:  # a plain (non-zip) pickle
        pickle.dump({"a": 1}, f)
    with pytest.raises(AcmInputError, match="--trust-pickle"):
        load_model(str(tmp_path / "legacy.pt"))


def test_state_dicts_need_arch(tmp_path, tiny_vit):
    torch.save({"state_dict": tiny_vit.state_dict()}, tmp_path / "sd.pt")
    with pytest.raises(AcmInputError, match="--arch"):
        load_model(str(tmp_path / "sd.pt"))
    loaded = load_model(str(tmp_path / "sd.pt"), arch="timm:test_vit")
    x = torch.randn(1, 3, 160, 160)
    torch.testing.assert_close(loaded.model(x), tiny_vit(x))
    save_file({k: v.contiguous() for k, v in tiny_vit.state_dict().items()}, tmp_path / "sd.safetensors")
    with pytest.raises(AcmInputError, match="--arch"):
        load_model(str(tmp_path / "sd.safetensors"))
    assert load_model(str(tmp_path / "sd.safetensors"), arch="timm:test_vit").spec["name"] == "test_vit"


@pytest.mark.parametrize("content,message", [
    (b"", "empty"),
    (b"this is not a model at all" * 10, "not a"),
    (None, "not a"),  # truncated: filled in below
])
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_corrupt_empty_truncated_files(tmp_path, tiny_vit, content, message, suffix):
    path = tmp_path / f"bad{suffix}"
    if content is None:
        good = tmp_path / f"good{suffix}"
        if suffix == ".pt":
            torch.save(tiny_vit, good)
        else:
            save_file({k: v.contiguous() for k, v in tiny_vit.state_dict().items()}, good)
        content = good.read_bytes()[: good.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(AcmInputError, match=message):
        load_model(str(path), arch="timm:test_vit")


def test_missing_and_unknown_sources(tmp_path):
    with pytest.raises(AcmInputError, match="no such file"):
        load_model(str(tmp_path / "nope.pt"))
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(AcmInputError, match="not a model source"):
        load_model(str(tmp_path / "model.onnx"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(AcmInputError, match="config.json"):
        load_model(str(tmp_path / "folder"))


def test_hugging_face_folder(tmp_path):
    import transformers as T
    model = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=100)).eval()
    model.save_pretrained(tmp_path / "bert")
    loaded = load_model(str(tmp_path / "bert"))
    assert loaded.spec["kind"] == "hf" and loaded.spec["class"] == "BertModel"
    ids = torch.randint(0, 100, (1, 9))
    torch.testing.assert_close(loaded.model(ids).last_hidden_state, model(ids).last_hidden_state)
    rebuilt = build_from_spec(loaded.spec)
    assert type(rebuilt) is T.BertModel and rebuilt.config.hidden_size == 32
    inputs = example_inputs(loaded.model, loaded.spec)
    assert set(inputs) == {"input_ids", "attention_mask"}
