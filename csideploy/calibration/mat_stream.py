"""MATLAB v5 .mat files written a chunk of rows at a time, with bounded memory.

The layout of a v5 file follows from the shapes, so the headers are written first and every
chunk of rows goes straight to its column-major place in the file: writing N samples holds only
the chunk in memory and needs no disk beyond the file itself.
A v5 variable is limited to 2**32 bytes: at most 524,287 samples of 2048 float32 values per file.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration.mat_write import AbortsOnError, chmod_default
from csideploy.errors import DataError, ShapeError

_MAX_ELEMENT_BYTES = 2**32 - 1

# MAT v5 constants (MATLAB "MAT-File Format", level 5).
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_SINGLE, _MI_DOUBLE, _MI_MATRIX = 1, 5, 6, 7, 9, 14
_MX_DOUBLE_CLASS, _MX_SINGLE_CLASS = 6, 7
_COMPLEX_FLAG = 0x0800


def _pad8(n: int) -> int:
    return (8 - n % 8) % 8


@dataclass(frozen=True)
class _Variable:
    name: str
    rows: int
    cols: int
    dtype: np.dtype
    complex_: bool

    @property
    def part_bytes(self) -> int:
        return self.rows * self.cols * self.dtype.itemsize

    def element_bytes(self) -> int:
        """Bytes of the miMATRIX payload: flags, dims, name and one or two data parts."""
        name = len(self.name.encode("ascii"))
        data = 8 + self.part_bytes + _pad8(self.part_bytes)
        return 16 + 16 + 8 + name + _pad8(name) + data * (2 if self.complex_ else 1)


class MatStreamWriter(AbortsOnError):
    """Write 2-D MATLAB v5 matrices of known shape, a chunk of rows at a time.

    `variables` maps name -> (rows, cols, dtype) with dtype float32, float64, complex64 or
    complex128. The file's layout is fixed by the shapes, so the headers are written first and
    each `write(name, start, block)` puts its rows straight at their column-major offsets
    (one positioned write per column): memory holds only the block, and disk only the file.
    The file is built under a temporary name and moved to `path` by `close()` (os.replace, so
    a reader never sees half a file). Every row must have been written once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        variables: Mapping[str, tuple[int, int, Any]],
    ) -> None:
        self.path = Path(path)
        self._vars = {
            name: self._variable(name, rows, cols, np.dtype(dtype))
            for name, (rows, cols, dtype) in variables.items()
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        self._tmp = Path(tmp)
        self._offsets: dict[str, list[int]] = {}
        self._written = dict.fromkeys(self._vars, 0)
        try:
            self._write_headers()
        except BaseException:
            self.abort()
            raise

    def _write_headers(self) -> None:
        """The file header and each variable's tags; the data regions are left as holes."""
        offset = os.pwrite(self._fd, _header(), 0)
        for name, var in self._vars.items():
            head = _variable_header(var)
            offset += os.pwrite(self._fd, head, offset)
            self._offsets[name] = []
            for _part in range(2 if var.complex_ else 1):
                offset += os.pwrite(self._fd, _data_tag(var), offset)
                self._offsets[name].append(offset)
                offset += var.part_bytes + _pad8(var.part_bytes)
        os.ftruncate(self._fd, offset)

    @staticmethod
    def _variable(name: str, rows: int, cols: int, dtype: np.dtype) -> _Variable:
        if not name.isidentifier() or name.startswith("_") or not name.isascii():
            raise ValueError(f"{name!r} is not a valid MATLAB variable name")
        if rows < 1 or cols < 1:
            raise ShapeError(f"{name}: shape ({rows}, {cols}) is empty")
        kinds = {
            np.dtype(np.float32): np.float32,
            np.dtype(np.float64): np.float64,
            np.dtype(np.complex64): np.float32,
            np.dtype(np.complex128): np.float64,
        }
        if dtype not in kinds:
            raise ValueError(f"{name}: dtype {dtype} is not float32/64 or complex64/128")
        var = _Variable(name, rows, cols, np.dtype(kinds[dtype]), dtype.kind == "c")
        if var.element_bytes() > _MAX_ELEMENT_BYTES:
            raise DataError(
                f"{name}: {rows} x {cols} {dtype} exceeds the 4 GiB limit of a MATLAB v5 "
                "variable; write fewer samples per file"
            )
        return var

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        """Rows `start : start + len(block)` of variable `name`."""
        var = self._vars[name]
        block = np.asarray(block).reshape(len(block), -1)
        if block.shape[1] != var.cols or start < 0 or start + len(block) > var.rows:
            raise ShapeError(
                f"{name}: block of shape {block.shape} at row {start} does not fit "
                f"({var.rows}, {var.cols})"
            )
        parts = (block.real, block.imag) if var.complex_ else (block.real,)
        size = var.dtype.itemsize
        for base, part in zip(self._offsets[name], parts, strict=True):
            columns = np.ascontiguousarray(part.T, dtype=var.dtype.newbyteorder("<"))
            for col in range(var.cols):  # column-major: column `col` holds rows contiguously
                os.pwrite(self._fd, columns[col].tobytes(), base + (col * var.rows + start) * size)
        self._written[name] += len(block)

    def close(self) -> Path:
        """Finish the file and move it to `path`; returns the path."""
        missing = {
            n: v.rows - self._written[n]
            for n, v in self._vars.items()
            if self._written[n] != v.rows
        }
        if missing:
            self.abort()
            raise DataError(f"{self.path}: rows not written (or written twice): {missing}")
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            chmod_default(str(self._tmp))
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (nothing is written at `path`)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._tmp.unlink(missing_ok=True)


def _variable_header(var: _Variable) -> bytes:
    """The miMATRIX tag, array flags, dimensions and name of `var`."""
    name = var.name.encode("ascii")
    is_double = var.dtype == np.float64
    flags = (_MX_DOUBLE_CLASS if is_double else _MX_SINGLE_CLASS) | (
        _COMPLEX_FLAG if var.complex_ else 0
    )
    return (
        struct.pack("<II", _MI_MATRIX, var.element_bytes())
        + struct.pack("<IIII", _MI_UINT32, 8, flags, 0)
        + struct.pack("<IIii", _MI_INT32, 8, var.rows, var.cols)
        + struct.pack("<II", _MI_INT8, len(name))
        + name
        + b"\0" * _pad8(len(name))
    )


def _data_tag(var: _Variable) -> bytes:
    """The tag in front of one data part (real or imaginary)."""
    return struct.pack("<II", _MI_DOUBLE if var.dtype == np.float64 else _MI_SINGLE, var.part_bytes)


def _header() -> bytes:
    """The v5 file header; its date is SOURCE_DATE_EPOCH when set, so reruns can be
    compared byte for byte (the only bytes that otherwise differ between equal runs)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = time.gmtime(int(epoch)) if epoch.isdigit() else time.localtime()
    text = f"MATLAB 5.0 MAT-file, Platform: csideploy, Created on: {time.asctime(when)}".encode()
    return text[:116].ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"


def planned_bytes(variables: Mapping[str, tuple[int, int, Any]]) -> int:
    """Bytes of a .mat file holding `variables` (name -> (rows, cols, dtype)), v5 layout.

    The v7.3 (HDF5) files written for larger variables take about as much.
    """
    total = 128
    for name, (rows, cols, dtype) in variables.items():
        dt = np.dtype(dtype)
        part = np.dtype(np.float64 if dt in (np.float64, np.complex128) else np.float32)
        total += 8 + _Variable(name, rows, cols, part, dt.kind == "c").element_bytes()
    return total


def fits_v5(variables: Mapping[str, tuple[int, int, Any]]) -> bool:
    """Whether every variable fits the 4 GiB element limit of MATLAB v5."""
    return all(
        planned_bytes({name: spec}) - 136 <= _MAX_ELEMENT_BYTES for name, spec in variables.items()
    )


def open_mat_writer(path: str | os.PathLike[str], variables: Mapping[str, tuple[int, int, Any]]):
    """A streaming .mat writer for `variables`: MATLAB v5 when they fit, else v7.3 (HDF5).

    The released COST2100 files are v7.3; every reader here reads both. v7.3 needs h5py.
    """
    if fits_v5(variables):
        return MatStreamWriter(path, variables)
    from csideploy.calibration.mat73_stream import Mat73StreamWriter

    return Mat73StreamWriter(path, variables)
