"""Read what a pickle would do, without doing it.

A symbolic run of the opcode stream (pickletools gives each opcode's stack effect) that tracks only
two things: the names of the globals the pickle pushes, and which of them it calls with arguments
of its own choosing (REDUCE). Nothing is imported, constructed or called. A stream we cannot follow
is an error, never a pass.
"""
from __future__ import annotations

import pickletools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


# Opcodes that call a class or look up a global through the copyreg registry; torch's weights-only
# loader refuses them too, so a file that uses them is not a torch.save of weights or modules.
_REFUSED_OPS = {"INST", "OBJ", "EXT1", "EXT2", "EXT4"}
_STRING_OPS = {"UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_MARK = object()
_MAX_PICKLE_BYTES = 256 << 20


class _Opaque:
    __slots__ = ()


_OPAQUE = _Opaque()


@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True)
class _Str:
    value: str


@dataclass
class PickleScan:
    globals: set = field(default_factory=set)
    """Every global the pickle names (module.qualname)."""
    called: set = field(default_factory=set)
    """Globals the pickle calls with arguments it chooses (REDUCE)."""


class UnreadablePickle(ValueError):
    pass


def scan_pickle(data: bytes) -> PickleScan:
    """The globals a pickle names and the ones it calls; raises UnreadablePickle if it cannot tell."""
    out = PickleScan()
    stack: list = []
    memo: dict = {}
    try:
        for op, arg, _ in pickletools.genops(data):
            _step(op, arg, stack, memo, out)
    except UnreadablePickle:
        raise
    except Exception as e:  # pickletools raises ValueError and others on a damaged stream
        raise UnreadablePickle(f"damaged pickle stream ({type(e).__name__}: {str(e)[:120]})") from None
    return out


def _step(op, arg, stack: list, memo: dict, out: PickleScan) -> None:
    name = op.name
    if name in _REFUSED_OPS:
        raise UnreadablePickle(f"the pickle uses the {name} opcode, which torch.save never writes")
    if name in _PUT_OPS:
        memo[arg] = _top(stack)
        return
    if name == "MEMOIZE":
        memo[len(memo)] = _top(stack)
        return
    if name in _GET_OPS:
        if arg not in memo:
            raise UnreadablePickle(f"memo entry {arg} read before it was written")
        stack.append(memo[arg])
        return
    if name == "DUP":
        stack.append(_top(stack))
        return
    popped = _pop(op, stack)
    if name == "GLOBAL":
        if arg.count(" ") != 1 or not arg.isascii():
            raise UnreadablePickle(f"GLOBAL {arg[:80]!r} is not a module and a name")
        pushed = _Global(_python3_name(*arg.split(" ")))
        out.globals.add(pushed.name)
    elif name == "STACK_GLOBAL":
        module, qualname = popped
        if not (isinstance(module, _Str) and isinstance(qualname, _Str)):
            raise UnreadablePickle("STACK_GLOBAL names a global computed at load time")
        pushed = _Global(_python3_name(module.value, qualname.value))
        out.globals.add(pushed.name)
    elif name in _STRING_OPS and isinstance(arg, str):
        pushed = _Str(arg)
    else:
        if name == "REDUCE":
            callee = popped[0]
            if isinstance(callee, _Global):
                out.called.add(callee.name)
        pushed = None
    for kind in op.stack_after:
        if kind is pickletools.markobject:
            stack.append(_MARK)
        else:
            stack.append(pushed if pushed is not None else _OPAQUE)


def _python3_name(module: str, name: str) -> str:
    """What torch's loader reads a protocol-2 name as (__builtin__.set is builtins.set)."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _top(stack: list):
    # a mark is not a value: torch's loader keeps marks apart from the stack, so a pickle that
    # stores or copies one would be read differently by this scan than by the loader
    if not stack or stack[-1] is _MARK:
        raise UnreadablePickle("the pickle reads an empty stack or a mark as a value")
    return stack[-1]


def _pop(op, stack: list) -> list:
    """Pop the opcode's inputs; returns those above any mark, in stack order."""
    before = op.stack_before
    if pickletools.markobject in before:
        below = before.index(pickletools.markobject)  # items under the mark (SETITEMS's dict, ...)
        sliced = []
        while True:
            if not stack:
                raise UnreadablePickle(f"{op.name} finds no mark on the stack")
            item = stack.pop()
            if item is _MARK:
                break
            sliced.append(item)
        sliced.reverse()
        for _ in range(below):
            if not stack or stack.pop() is _MARK:
                raise UnreadablePickle(f"{op.name} finds the stack shorter than it needs")
        return sliced
    if len(stack) < len(before):
        raise UnreadablePickle(f"{op.name} finds the stack shorter than it needs")
    popped = stack[len(stack) - len(before):] if before else []
    del stack[len(stack) - len(before):]
    if any(item is _MARK for item in popped):
        raise UnreadablePickle(f"{op.name} reads a mark as a value")
    return popped


def torch_zip_pickle(path: Path) -> bytes:
    """The data.pkl of a torch.save zip archive (refuses legacy, non-zip pickles)."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
            if len(names) != 1:
                raise UnreadablePickle("a zip file, but not one torch.save wrote (no single data.pkl)")
            if z.getinfo(names[0]).file_size > _MAX_PICKLE_BYTES:  # the tensors live outside data.pkl
                raise UnreadablePickle(f"its data.pkl holds over {_MAX_PICKLE_BYTES >> 20} MiB of pickle")
            return z.read(names[0])
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise UnreadablePickle(f"not a PyTorch zip archive ({type(e).__name__})") from None
