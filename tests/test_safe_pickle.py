"""The pickle loader never imports or calls anything outside its exact allow-list (issue 13, 1-2)."""
import io
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile

import pytest
import torch

from acmtool.errors import AcmInputError
from acmtool.io.pickle_scan import UnreadablePickle, scan_pickle
from acmtool.io.safe_pickle import load_untrusted

EVILMOD = textwrap.dedent("""
    import pathlib
    pathlib.Path(__file__).with_name("pwned").write_text("evilmod ran")

    import torch

    class X(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
""")


def _evil_folder(tmp_path):
    """A folder with evilmod.py (writes ./pwned when imported) and evil.pt, a module naming evilmod.X."""
    (tmp_path / "evilmod.py").write_text(EVILMOD)
    code = "import sys, torch; sys.path.insert(0, '.'); import evilmod; torch.save(evilmod.X(), 'evil.pt')"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    (tmp_path / "pwned").unlink()  # writing the file ran it once; from here on it must never run
    return tmp_path


def test_a_module_beside_the_file_is_never_imported(tmp_path, monkeypatch):
    folder = _evil_folder(tmp_path)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))  # as `python -m acmtool` run from that folder has it
    with pytest.raises(AcmInputError, match="evilmod.X.*--trust-pickle.*--arch"):
        load_untrusted(folder / "evil.pt")
    assert "evilmod" not in sys.modules
    assert not (folder / "pwned").exists()


def test_the_import_side_effect_poc_through_the_command_line(tmp_path):
    folder = _evil_folder(tmp_path)
    env = dict(os.environ, PYTHONPATH="")  # the folder itself is on sys.path under -m, as in the report
    r = subprocess.run([sys.executable, "-m", "acmtool", "convert", "evil.pt", "--no-onnx", "-o", "out.safetensors"],
                       cwd=folder, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "--trust-pickle" in r.stderr and "Traceback" not in r.stderr
    assert not (folder / "pwned").exists(), "evilmod's top-level code ran"
    assert not (folder / "out.safetensors").exists()


class _Calls:
    """Pickles as a call of `fn(*args)` when loaded (REDUCE), which torch.save never writes for a module."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("fn,args", [
    (torch.nn.Linear, (4, 5)),                       # an admitted class: its constructor must not run
    (torch.nn.Embedding, (1 << 40, 1 << 20)),        # the same, hostile: 4 PB if it ran
    (torch.nn.functional.gelu, (torch.zeros(2),)),   # an admitted activation function
])
def test_reduce_on_an_admitted_class_is_refused(tmp_path, fn, args):
    torch.save({"x": _Calls(fn, *args)}, tmp_path / "reduce.pt")
    with pytest.raises(AcmInputError, match="calls .* with arguments of its own"):
        load_untrusted(tmp_path / "reduce.pt")


def test_enums_and_plain_modules_still_load(tmp_path, tiny_vit):
    torch.save(tiny_vit, tmp_path / "vit.pt")  # timm's Format enum is pickled as a REDUCE lookup
    back = load_untrusted(tmp_path / "vit.pt")
    x = torch.randn(1, 3, 160, 160)
    torch.testing.assert_close(back(x), tiny_vit(x))


def test_hugging_face_module_pickles_load():
    import transformers as T
    model = T.BertModel(T.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=50)).eval()
    buf = io.BytesIO()
    torch.save(model, buf)
    path = _write(buf.getvalue())
    back = load_untrusted(path)
    ids = torch.randint(0, 50, (1, 7))
    torch.testing.assert_close(back(ids).last_hidden_state, model(ids).last_hidden_state)


def _write(data: bytes):
    import tempfile
    f = tempfile.NamedTemporaryFile(suffix=".pt", delete=False)
    f.write(data)
    f.close()
    return f.name


def _zip_with(tmp_path, pkl: bytes):
    path = tmp_path / "crafted.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("crafted/data.pkl", pkl)
        z.writestr("crafted/version", "3\n")
    return path


def test_protocol_4_names_and_calls_are_seen(tmp_path):
    """STACK_GLOBAL (protocol 4) builds a name from strings; the scan must still see it."""
    pkl = pickle.dumps(_Calls(os.system, "touch pwned"), protocol=4)
    scan = scan_pickle(pkl)
    assert scan.globals == scan.called == {f"{os.system.__module__}.system"}
    with pytest.raises(AcmInputError, match=r"allow-list \(.*system\)"):
        load_untrusted(_zip_with(tmp_path, pkl))


@pytest.mark.parametrize("pkl", [
    b"\x80\x02",                             # truncated stream
    b"\x80\x02R.",                           # REDUCE on an empty stack
    b"\x80\x02h\x05.",                       # a memo entry never written
    b"\x80\x02(q\x00h\x00.",                # a mark stored in the memo and read back as a value
    b"\x80\x02cos\nsystem\n(X\x02\x00\x00\x00lsto.",  # OBJ: a class call torch.save never writes
])
def test_unreadable_streams_are_refused(tmp_path, pkl):
    with pytest.raises(UnreadablePickle):
        scan_pickle(pkl)
    with pytest.raises(AcmInputError, match="can check"):
        load_untrusted(_zip_with(tmp_path, pkl))
