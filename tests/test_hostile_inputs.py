"""Hostile data and run state (issue 13, 3): a decompression bomb and a damaged run are one line, exit 2."""
import json
import struct
import zlib

import pytest
import torch

from acmtool.errors import AcmInputError
from acmtool.train.run_state import RunState


def _png_header_only(path, width, height):
    """A PNG that claims width x height pixels in 60 bytes: what a decompression bomb looks like."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) +
                     chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [12_000, 40_000])  # above PIL's warning limit, and above its error limit
def test_decompression_bomb_is_a_clear_error(tmp_path, side):
    from acmtool.data.images import check_readable
    from acmtool.visualize import open_image
    _png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(AcmInputError, match="bomb.png: the image claims more than .* pixels"):
        check_readable([tmp_path / "bomb.png"])
    with pytest.raises(AcmInputError, match="decompression bomb"):
        open_image(tmp_path / "bomb.png")


def _saved_run(folder):
    run = RunState(folder, {"budget": 0.5, "data": "x"})
    run.save({"w": torch.zeros(2)}, "distill", 3)
    return run


@pytest.mark.parametrize("damage", [
    lambda f: (f / "args.json").write_text("{not json"),
    lambda f: (f / "args.json").write_text("[1, 2]"),
    lambda f: (f / "args.json").unlink(),
    lambda f: (f / "state.pt").write_bytes(b"garbage"),
    lambda f: torch.save({"phase": "distill", "step": "3", "done": [], "history": {}, "model": {}}, f / "state.pt"),
    lambda f: torch.save({"phase": "distill", "step": 3, "done": "all", "history": {}, "model": {}}, f / "state.pt"),
    lambda f: torch.save({"phase": 1, "step": 3, "done": [], "history": {}, "model": {}}, f / "state.pt"),
    lambda f: torch.save({"step": 3, "done": [], "history": {}, "model": {}}, f / "state.pt"),
    lambda f: torch.save({"phase": None, "step": 3, "done": [], "history": {}, "model": {"w": 1}}, f / "state.pt"),
    lambda f: torch.save([1, 2, 3], f / "state.pt"),
])
def test_damaged_run_state_is_a_clear_error(tmp_path, damage):
    _saved_run(tmp_path / "run")
    damage(tmp_path / "run")
    with pytest.raises(AcmInputError, match="--resume: .*(damaged|missing)"):
        RunState(tmp_path / "run", {"budget": 0.5, "data": "x"}).load()


def test_a_good_run_state_loads(tmp_path):
    _saved_run(tmp_path / "run")
    data = RunState(tmp_path / "run", {"budget": 0.5, "data": "x"}).load()
    assert data["phase"] == "distill" and data["step"] == 3
    assert json.loads((tmp_path / "run" / "args.json").read_text())["budget"] == 0.5


def test_a_run_started_before_an_option_existed_resumes_under_its_default(tmp_path):
    _saved_run(tmp_path / "run")  # args.json has no "skew"
    defaults = {"skew": 1.0}
    data = RunState(tmp_path / "run", {"budget": 0.5, "data": "x", "skew": 1.0}, defaults=defaults).load()
    assert data["step"] == 3
    with pytest.raises(AcmInputError, match=r"other options \(skew\)"):
        RunState(tmp_path / "run", {"budget": 0.5, "data": "x", "skew": 2.0}, defaults=defaults).load()
    with pytest.raises(AcmInputError, match=r"other options \(skew\)"):  # no default known: a new option differs
        RunState(tmp_path / "run", {"budget": 0.5, "data": "x", "skew": 1.0}).load()
