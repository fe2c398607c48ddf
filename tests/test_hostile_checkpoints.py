"""A corpus of hostile checkpoints (issue 13, 3): every one is exit 2, one line, no traceback, no output.

Each case edits a good checkpoint's metadata or tensors the way a damaged or malicious file would.
The checkpoint is opened through `acmtool inspect` (and a few through export and eval), in process
with click's runner so that an escaping exception fails the test instead of printing a traceback.
"""
import math

import pytest
import torch
from click.testing import CliRunner

import acmtool
from acmtool.cli.main import cli
from acmtool.io.sources import example_inputs, load_model, user_spec
from checkpoint_edits import rewrite

BIG = 10 ** 6


def _timm_good(folder):
    loaded = load_model("timm:test_vit")
    acmtool.acmize_(loaded.model, acmtool.AcmConfig(), example_inputs=example_inputs(loaded.model, loaded.spec))
    return acmtool.save(loaded.model, folder / "timm.acm.safetensors", source=loaded.spec)


def _hf_good(folder):
    import transformers as T
    model = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=60, max_position_embeddings=32))
    acmtool.acmize_(model.eval(), acmtool.AcmConfig())
    return acmtool.save(model, folder / "hf.acm.safetensors", source=user_spec(model))


def _file_good(folder, tiny_vit):
    torch.save(tiny_vit, folder / "vit.pt")
    loaded = load_model(str(folder / "vit.pt"))
    acmtool.acmize_(loaded.model, acmtool.AcmConfig())
    return acmtool.save(loaded.model, folder / "file.acm.safetensors", source=loaded.spec)


def _info(edit):
    return {"info": edit}


def _src(**kwargs):
    return lambda i: i["source"].update(kwargs)


def _cfg(**kwargs):
    return lambda i: i["config"].update(kwargs)


def _kw(**kwargs):
    return lambda i: i["source"]["kwargs"].update(kwargs)


def _hfcfg(**kwargs):
    return lambda i: i["source"]["config"].update(kwargs)


def _set(key, value):
    return lambda i: i.__setitem__(key, value)


def _drop(key):
    return lambda i: i.pop(key)


def _meta(key, value):
    return {"meta": lambda m: m.__setitem__(key, value) if value is not None else m.pop(key)}


def _tensors(edit):
    return {"tensors": edit}


# id: (base, edit, a fragment of the one-line message)
CASES = {
    # the safetensors metadata itself
    "format-version": ("timm", _meta("format_version", "99"), "format '99'"),
    "format-version-type": ("timm", _meta("format_version", "1" * 500), "format"),
    "no-format": ("timm", _meta("format", None), "not an ACM checkpoint"),
    "no-info": ("timm", _meta("info", None), "not JSON"),
    "info-not-json": ("timm", _meta("info", "{not json"), "not JSON"),
    "info-a-list": ("timm", _meta("info", "[1, 2]"), "expected an object"),
    "info-a-number": ("timm", _meta("info", "3"), "expected an object"),
    "info-nested-deep": ("timm", _meta("info", "[" * 100_000 + "]" * 100_000), "damaged"),
    # the info object
    "missing-config": ("timm", _info(_drop("config")), "missing config"),
    "missing-sites": ("timm", _info(_drop("sites")), "missing sites"),
    "missing-source": ("timm", _info(_drop("source")), "missing source"),
    "unknown-key": ("timm", _info(_set("plugin", "x.py")), "unknown key plugin"),
    # the ACM config
    "learners-a-string": ("timm", _info(_cfg(num_learners="4")), "num_learners"),
    "learners-huge": ("timm", _info(_cfg(num_learners=BIG)), "num_learners"),
    "learners-negative": ("timm", _info(_cfg(num_learners=-1)), "num_learners"),
    "learners-bool": ("timm", _info(_cfg(num_learners=True)), "num_learners"),
    "gate-hidden-huge": ("timm", _info(_cfg(gate_hidden=10 ** 9)), "gate_hidden"),
    "gate-hidden-a-string": ("timm", _info(_cfg(gate_hidden="x")), "gate_hidden"),
    "gumbel-nan": ("timm", _info(_cfg(gumbel_tau=math.nan)), "gumbel_tau"),
    "targets-unknown": ("timm", _info(_cfg(targets="everything")), "targets"),
    "config-unknown-field": ("timm", _info(_cfg(loader="evil")), "unknown AcmConfig fields"),
    "config-a-list": ("timm", _info(_set("config", [4])), "JSON object"),
    # converted sites
    "sites-not-a-list": ("timm", _info(_set("sites", "blocks")), "info.sites"),
    "site-bad-path": ("timm", _info(lambda i: i["sites"][0].update(path="../../etc/passwd")), "not a valid value"),
    "site-bad-kind": ("timm", _info(lambda i: i["sites"][0].update(kind="conv")), "expected mlp or proj"),
    "sites-too-many": ("timm", _info(_set("sites", [{"path": f"m{i}", "kind": "mlp", "adapter": "a"}
                                                    for i in range(5000)])), "at most 4096"),
    "site-twice": ("timm", _info(lambda i: i["sites"].append(dict(i["sites"][0]))), "listed twice"),
    "site-moved": ("timm", _info(lambda i: i["sites"][0].update(path="blocks.0.attn")), "unknown key blocks.0.mlp"),
    # other info values
    "profile-a-string": ("timm", _info(_set("flops_profile", "lots")), "flops_profile"),
    "profile-negative": ("timm", _info(lambda i: i["flops_profile"].update(original=-5)), "flops_profile.original"),
    "budget-too-big": ("timm", _info(_set("budget", 5.0)), "info.budget"),
    "budget-a-string": ("timm", _info(_set("budget", "half")), "info.budget"),
    "static-without-budget": ("timm", _info(_set("static", True)), "needs its budget"),
    "budget-range-reversed": ("timm", _info(_set("budget_range", [0.9, 0.2])), "info.budget_range"),
    "budget-range-long": ("timm", _info(_set("budget_range", [0.1, 0.2, 0.3])), "info.budget_range"),
    "report-options-bad": ("timm", _info(_set("report", {"options": {"val_fraction": "x"}})), "val_fraction"),
    # the model source
    "source-kind-unknown": ("timm", _info(_set("source", {"kind": "pickle", "path": "/tmp/x.pkl"})), "kind"),
    "timm-checkpoint-path": ("timm", _info(_kw(checkpoint_path="/etc/passwd")), "checkpoint_path"),
    "timm-pretrained-overlay": ("timm", _info(_kw(pretrained_cfg_overlay={"file": "/x"})), "pretrained_cfg_overlay"),
    "timm-pretrained": ("timm", _info(_kw(pretrained=True)), "pretrained"),
    "timm-depth-huge": ("timm", _info(_kw(depth=10 ** 6)), "depth"),
    "timm-width-mismatch": ("timm", _info(_kw(embed_dim=512, num_heads=8)), "do not match"),
    "timm-kwargs-nested": ("timm", _info(_kw(img_size={"a": 1})), "not allowed here"),
    "timm-name-path": ("timm", _info(_src(name="../../x")), "not a valid value"),
    "timm-name-unknown": ("timm", _info(_src(name="no_such_vit")), "timm has no model"),
    "user-class": ("timm", _info(_set("source", {"kind": "user", "class": "os.system"})), "model="),
    "hf-class-not-a-model": ("hf", _info(_src(**{"class": "BertTokenizer"})), "no model class"),
    "hf-class-wrong-family": ("hf", _info(_src(**{"class": "ViTModel"})), "is not a 'bert' model"),
    "hf-class-lowercase": ("hf", _info(_src(**{"class": "os"})), "not a valid value"),
    "hf-unknown-family": ("hf", _info(_hfcfg(model_type="llama")), "no adapter for"),
    "hf-auto-map": ("hf", _info(_hfcfg(auto_map={"AutoModel": "evil.Model"})), "auto_map"),
    "hf-attn-implementation": ("hf", _info(_hfcfg(attn_implementation="kernels-community/x")), "attn_implementation"),
    "hf-private-key": ("hf", _info(_hfcfg(_commit_hash="x")), "_commit_hash"),
    "hf-layers-huge": ("hf", _info(_hfcfg(num_hidden_layers=10 ** 5)), "num_hidden_layers"),
    "hf-width-huge": ("hf", _info(_hfcfg(hidden_size=BIG, intermediate_size=4 * BIG, num_attention_heads=2)),
                      "do not match"),
    "hf-inconsistent": ("hf", _info(_hfcfg(hidden_size=33)), "could not be built"),
    "hf-config-a-list": ("hf", _info(_src(config=[1, 2])), "config"),
    "file-sha-changed": ("file", _info(_src(sha256="0" * 64)), "has changed"),
    "file-sha-malformed": ("file", _info(_src(sha256="abc")), "sha256"),
    "file-gone": ("file", _info(_src(path="/nonexistent/vit.pt")), "gone"),
    # tensors against the header
    "tensor-missing": ("timm", _tensors(lambda t: t.pop("blocks.0.mlp.w1")), "do not match"),
    "tensor-extra": ("timm", _tensors(lambda t: t.update(extra=torch.zeros(1))), "unexpected extra"),
    "tensor-shape": ("timm", _tensors(lambda t: t.update({"blocks.0.mlp.b2": torch.zeros(3)})), "do not match"),
    "tensor-dtype": ("timm", _tensors(lambda t: t.update({"blocks.0.mlp.b2": t["blocks.0.mlp.b2"].half()})),
                     "F16"),
}


@pytest.fixture(scope="module")
def goods(tmp_path_factory):
    folder = tmp_path_factory.mktemp("goods")
    torch.manual_seed(0)
    import timm
    tiny_vit = timm.create_model("test_vit").eval()
    return {"timm": _timm_good(folder), "hf": _hf_good(folder), "file": _file_good(folder, tiny_vit)}


def _one_line_exit_2(args, fragment):
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"escaped: {type(result.exception).__name__}: {result.exception}"
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("acmtool: error: "), result.stderr
    assert "Traceback" not in result.output
    if fragment:
        assert fragment in result.stderr, result.stderr
    return result


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_checkpoint_is_one_line_exit_2(goods, tmp_path, case):
    base, edit, fragment = CASES[case]
    bad = tmp_path / f"{case}.acm.safetensors"
    rewrite(goods[base], bad, **edit)
    _one_line_exit_2(["inspect", str(bad)], fragment)


@pytest.mark.parametrize("case", ["learners-huge", "timm-checkpoint-path", "tensor-shape", "hf-auto-map"])
def test_hostile_checkpoint_writes_no_onnx(goods, tmp_path, case):
    base, edit, fragment = CASES[case]
    bad = tmp_path / f"{case}.acm.safetensors"
    rewrite(goods[base], bad, **edit)
    out = tmp_path / "out.onnx"
    _one_line_exit_2(["export", str(bad), "-o", str(out)], fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == [bad.name]


def test_the_good_checkpoints_load(goods):
    for path in goods.values():
        assert acmtool.load(path) is not None


def test_recorded_weights_are_checked_before_use(tmp_path, tiny_vit):
    """The original weights a checkpoint points at (for eval's teacher) must be the recorded file."""
    from acmtool.errors import AcmInputError
    from acmtool.io.sources import load_original
    torch.save(tiny_vit.state_dict(), tmp_path / "w.pth")
    spec = load_model("timm:test_vit", weights=str(tmp_path / "w.pth")).spec
    assert isinstance(load_original(spec), torch.nn.Module)
    torch.save({k: v + 1 for k, v in tiny_vit.state_dict().items()}, tmp_path / "w.pth")
    with pytest.raises(AcmInputError, match="has changed"):
        load_original(spec)
