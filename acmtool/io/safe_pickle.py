"""torch.load of a whole module without running code from the file.

Before anything is unpickled, `pickle_scan` reads the opcode stream: every global the file names
must be on acmtool's exact allow-list (`pickle_allow_list`; looked up by name, so no module the
file names is imported), and the file may call none of them with its own arguments except an Enum
lookup. Only then does torch's weights-only loader run, with exactly those objects allowed.
Anything else is refused with a message that names --trust-pickle and the safe path (--arch and a
state dict).
"""
from __future__ import annotations

from pathlib import Path

import torch

from acmtool.errors import AcmInputError
from acmtool.io.pickle_allow_list import may_be_called, resolve
from acmtool.io.pickle_scan import UnreadablePickle, scan_pickle, torch_zip_pickle

SAFE_PATH = ("if you trust this file, pass --trust-pickle; otherwise save its state dict "
             "(torch.save(model.state_dict(), ...)) and pass it with --arch")


def load_untrusted(path: Path, trust_pickle: bool = False):
    """Load a .pt/.pth file; a whole module only when every class it names is on the allow-list."""
    path = Path(path)
    if trust_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # corrupt files raise many types
            raise AcmInputError(f"{path}: not a readable PyTorch file ({type(e).__name__}: {_short(e)})") from None
    allowed = check_pickle(path)
    try:
        with torch.serialization.safe_globals([(obj, name) for name, obj in allowed.items()]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AcmInputError(f"{path}: could not be loaded safely ({type(e).__name__}: {_short(e)}); "
                            f"{SAFE_PATH}") from None


def check_pickle(path: Path) -> dict:
    """name -> object for the allowed globals the file names; AcmInputError if any is not allowed."""
    try:
        scan = scan_pickle(torch_zip_pickle(path))
    except UnreadablePickle as e:
        raise AcmInputError(f"{path}: not a PyTorch file acmtool can check ({e}); {SAFE_PATH}") from None
    torch_own = _torch_default_globals()
    names = sorted(scan.globals - torch_own)
    allowed = {n: resolve(n) for n in names}
    refused = [n for n, obj in allowed.items() if obj is None]
    if refused:
        shown = ", ".join(refused[:5]) + (" ..." if len(refused) > 5 else "")
        raise AcmInputError(f"{path} holds pickled objects outside acmtool's allow-list ({shown}); loading them "
                            f"could run code. {SAFE_PATH[0].upper()}{SAFE_PATH[1:]}")
    called = sorted(n for n in scan.called - torch_own if not may_be_called(allowed.get(n)))
    if called:
        raise AcmInputError(f"{path} calls {', '.join(called[:3])} with arguments of its own when loaded, which "
                            f"torch.save never does for a module; refused. {SAFE_PATH[0].upper()}{SAFE_PATH[1:]}")
    return allowed


def _torch_default_globals() -> set:
    """The names torch's weights-only loader allows by itself (tensor rebuilds, dtypes, OrderedDict)."""
    from torch import _weights_only_unpickler as wou
    return set(wou._get_allowed_globals())


def _short(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
