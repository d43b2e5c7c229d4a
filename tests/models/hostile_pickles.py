"""Pickle programs built opcode by opcode, for tests of hostile checkpoints (a pickler would
refuse to write most of them)."""

from __future__ import annotations

import io
import struct
import zipfile

import torch


def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_text(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_bytes(data: bytes) -> bytes:
    """Bytes as a protocol-2 pickle of a torch file carries them (SHORT_BINSTRING)."""
    return b"U" + bytes([len(data)]) + data


def op_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def dtype_of(code: str, state: bytes = b"") -> bytes:
    """`numpy.dtype(code, False, True)`, then BUILD with `state` when given."""
    made = op_global("numpy", "dtype") + op_text(code) + b"\x89\x88\x87R"  # False, True, TUPLE3
    return made + (state + b"b" if state else b"")


def trainer_dict(value: bytes) -> bytes:
    """A protocol-2 pickle of `{'epoch': <value>}`."""
    return b"\x80\x02}" + op_text("epoch") + value + b"s."


def in_torch_zip(pickled: bytes) -> bytes:
    """A torch zip checkpoint whose data.pkl is `pickled` (the rest as torch writes it)."""
    clean = io.BytesIO()
    torch.save({"epoch": 1}, clean)
    out = io.BytesIO()
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, pickled if info.filename.endswith("/data.pkl") else data)
    return out.getvalue()
