"""List what the pickles of a `torch.save` file ask for, and bound them, before loading.

`safe_load` decides from this scan which globals a file may use. The scan also refuses files
whose pickles are too large, run too many opcodes or nest too deep: a pickle can build a
tuple nested a million levels deep in one byte per level, and hashing such a key (as the
unpickler does when it puts it in a dict) overflows the C stack and kills the process. The
nesting depth is estimated from a symbolic run of the opcodes' stack effects, over-estimated
where in doubt, so nothing deeper than `MAX_DEPTH` is ever built.

Zip checkpoints are checked as archives first: a truncated or corrupt zip, or one whose
members claim to expand far beyond their stored size, is refused with the file named.
"""

from __future__ import annotations

import io
import pickletools
import zipfile
from collections.abc import Iterator
from typing import Any

from csideploy.errors import CheckpointError

MAX_PICKLE_BYTES = 64 * 2**20
"""Largest pickle (data.pkl) read from a zip checkpoint; real ones are kilobytes."""
MAX_OPCODES = 2_000_000
"""Most pickle opcodes scanned in one file; a large trainer dict has tens of thousands."""
MAX_DEPTH = 200
"""Deepest nesting of containers a pickle may build; state dicts nest about ten levels."""
MAX_EXPANSION = 100
"""Most a zip member may expand over its stored size (torch writes members uncompressed)."""
_MAX_PICKLES_IN_LEGACY_FILE = 5  # magic, protocol, sys_info, object, storage keys
_ZIP_MAGIC = b"PK\x03\x04"
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_FILL_OPS = frozenset({"APPEND", "SETITEM", "BUILD"})
_FILL_MARK_OPS = frozenset({"APPENDS", "SETITEMS", "ADDITEMS"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def globals_in_torch_file(data: bytes, *, label: str) -> set[str]:
    """Every global named by the pickles of a zip or legacy `torch.save` file."""
    if data[:4] == _ZIP_MAGIC or (data[:2] == b"PK" and zipfile.is_zipfile(io.BytesIO(data))):
        pickles = _zip_pickles(data, label)
        return {name for blob in pickles for name in _scan(io.BytesIO(blob), label=label)}
    stream = io.BytesIO(data)
    found: set[str] = set()
    for index in range(_MAX_PICKLES_IN_LEGACY_FILE):
        start = stream.tell()
        try:
            found.update(_scan(stream, label=label))
        except CheckpointError:
            if index == 0:
                raise
            # past the pickles of a legacy file lie raw storage bytes
            stream.seek(start)
            break
        if stream.tell() >= len(data):
            break
    return found


def _zip_pickles(data: bytes, label: str) -> list[bytes]:
    """The `.pkl` members of a zip checkpoint, each checked for size before it is read."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            for info in infos:
                if info.file_size > info.compress_size * MAX_EXPANSION + 2**20:
                    raise CheckpointError(
                        f"cannot read {label}: zip member {info.filename} claims "
                        f"{info.file_size} bytes from {info.compress_size} stored (a zip bomb?)"
                    )
            pickled = [i for i in infos if i.filename.endswith(".pkl")]
            for info in pickled:
                if info.file_size > MAX_PICKLE_BYTES:
                    raise CheckpointError(
                        f"cannot read {label}: {info.filename} is {info.file_size} bytes, over "
                        f"the {MAX_PICKLE_BYTES} a checkpoint's pickle may have"
                    )
            blobs = [archive.read(info) for info in pickled]
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError,
            ValueError, NotImplementedError) as error:  # fmt: skip
        # zipfile raises NotImplementedError for a compression method it does not know
        raise CheckpointError(
            f"cannot read {label}: a truncated or corrupt zip archive ({_first_line(error)})"
        ) from None
    if not blobs:
        raise CheckpointError(f"cannot read {label}: a zip archive without data.pkl")
    return blobs


class _Stack:
    """Symbolic pickle stack: each entry is the nesting depth of the object it stands for."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.items: list[int] = []
        self.marks: list[int] = []
        self.memo: dict[int, tuple[int, str | None]] = {}

    def pop(self, count: int) -> list[int]:
        if count > len(self.items) - (self.marks[-1] if self.marks else 0):
            raise CheckpointError(f"cannot read {self.label}: a malformed pickle (stack underflow)")
        taken = self.items[len(self.items) - count :] if count else []
        del self.items[len(self.items) - count :]
        return taken

    def pop_mark(self) -> list[int]:
        if not self.marks:
            raise CheckpointError(f"cannot read {self.label}: a malformed pickle (no mark)")
        start = self.marks.pop()
        taken = self.items[start:]
        del self.items[start:]
        return taken

    def push(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise CheckpointError(
                f"cannot read {self.label}: its pickle nests deeper than {MAX_DEPTH} levels"
            )
        self.items.append(depth)

    def top(self) -> int:
        if len(self.items) <= (self.marks[-1] if self.marks else 0):
            raise CheckpointError(f"cannot read {self.label}: a malformed pickle (empty stack)")
        return self.items[-1]

    def step(self, opcode: pickletools.OpcodeInfo, arg: Any) -> None:
        """Apply one opcode's effect on depths (containers: one more than their contents)."""
        name = opcode.name
        if name == "MARK":
            self.marks.append(len(self.items))
        elif name in _FILL_OPS:
            added = self.pop(len(opcode.stack_before) - 1)
            self._fill(added)
        elif name in _FILL_MARK_OPS:
            self._fill(self.pop_mark())
        elif name in _PUT_OPS or name == "MEMOIZE":
            key = len(self.memo) if name == "MEMOIZE" else int(arg)
            self.memo[key] = (self.top(), self.memo.get(key, (0, None))[1])
        elif name in _GET_OPS:
            self.push(self.memo.get(int(arg), (0, None))[0])
        elif name == "DUP":
            self.push(self.top())
        else:
            before = opcode.stack_before
            marked = any(s.name == "mark" for s in before)
            taken = self.pop_mark() if marked else self.pop(len(before))
            depth = 1 + max(taken) if taken else 0
            for _ in opcode.stack_after:
                self.push(depth)

    def _fill(self, added: list[int]) -> None:
        container = self.pop(1)[0]
        self.push(max([container, *(d + 1 for d in added)]))


def _scan(stream: io.BytesIO, *, label: str) -> Iterator[str]:
    """The globals one pickle names (protocol-4 STACK_GLOBAL pairs too), within the bounds."""
    strings: list[str] = []
    stack = _Stack(label)
    memo_strings: dict[int, str | None] = {}
    top: str | None = None
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(stream)):
            if count >= MAX_OPCODES:
                raise CheckpointError(f"cannot read {label}: over {MAX_OPCODES} pickle opcodes")
            kind = opcode.name
            if kind in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                yield _canonical(module, attr)
            elif kind == "STACK_GLOBAL":
                yield _canonical(*strings[-2:]) if len(strings) >= 2 else "<unnamed global>"
            if kind in _PUT_OPS or kind == "MEMOIZE":
                memo_strings[len(stack.memo) if kind == "MEMOIZE" else int(arg)] = top
            stack.step(opcode, arg)
            if kind in _STRING_OPS:
                strings.append(str(arg))
                top = str(arg)
            elif kind in _GET_OPS:
                top = memo_strings.get(int(arg))
                if isinstance(top, str):
                    strings.append(top)
            elif kind not in _PUT_OPS and kind != "MEMOIZE":
                top = None
    except (ValueError, EOFError, UnicodeDecodeError, KeyError, OverflowError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(
            f"cannot read {label}: not a PyTorch checkpoint ({_first_line(error)})"
        ) from None


def python3_name(name: str) -> str:
    """The Python 3 name of a global that a protocol-2 pickle wrote under its Python 2 name
    (`commands.check_call` is `subprocess.check_call`), as `pickle` itself would map it."""
    import _compat_pickle

    module, _, attr = name.rpartition(".")
    if (module, attr) in _compat_pickle.NAME_MAPPING:
        module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{attr}"


def _canonical(module: str, attr: str) -> str:
    """Python-2 names as torch's unpickler maps them (`__builtin__` -> `builtins`, ...)."""
    from torch._utils import IMPORT_MAPPING, NAME_MAPPING

    if (module, attr) in NAME_MAPPING:
        module, attr = NAME_MAPPING[(module, attr)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{attr}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
