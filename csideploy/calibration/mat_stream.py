"""MATLAB v5 .mat files written a chunk of rows at a time, with bounded memory.

Each variable is kept in a column-major temporary memory map on disk beside the output, and
the .mat file is assembled from it in blocks, so writing N samples holds only a chunk (plus a
block of at most ~64 MB) in memory, at the cost of the same size again in temporary disk space.
A v5 variable is limited to 2**32 bytes: at most 524,287 samples of 2048 float32 values per file.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.errors import DataError, ShapeError

_BLOCK_BYTES = 64 * 2**20
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


class MatStreamWriter:
    """Write 2-D MATLAB v5 matrices of known shape, a chunk of rows at a time.

    `variables` maps name -> (rows, cols, dtype) with dtype float32, float64, complex64 or
    complex128. Rows are appended with `write(name, start, block)`; `close()` assembles the
    file at `path` (through a temporary file and `os.replace`, so a reader never sees half a
    file) and removes the temporary maps. Every row must have been written once.
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
        self._tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        self._maps: dict[str, list[np.memmap]] = {}
        self._written: dict[str, int] = {}
        for name, var in self._vars.items():
            parts = ("re", "im") if var.complex_ else ("re",)
            self._maps[name] = [
                np.memmap(
                    self._tmpdir / f"{name}.{part}",
                    dtype=var.dtype,
                    mode="w+",
                    shape=(var.cols, var.rows),
                )
                for part in parts
            ]
            self._written[name] = 0

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
        maps = self._maps[name]
        maps[0][:, start : start + len(block)] = block.real.T
        if var.complex_:
            maps[1][:, start : start + len(block)] = block.imag.T
        self._written[name] += len(block)

    def close(self) -> Path:
        """Assemble the .mat file; returns its path."""
        missing = {
            n: v.rows - self._written[n]
            for n, v in self._vars.items()
            if self._written[n] != v.rows
        }
        if missing:
            self.abort()
            raise DataError(f"{self.path}: rows not written (or written twice): {missing}")
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(_header())
                for name, var in self._vars.items():
                    self._write_variable(fh, var, self._maps[name])
                fh.flush()
                os.fsync(fh.fileno())
            _chmod_default(tmp)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            self.abort()
        return self.path

    def abort(self) -> None:
        """Drop the temporary maps (nothing is written at `path`)."""
        self._maps = {name: [] for name in self._maps}
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> MatStreamWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()

    @staticmethod
    def _write_variable(fh: Any, var: _Variable, maps: list[np.memmap]) -> None:
        name = var.name.encode("ascii")
        is_double = var.dtype == np.float64
        flags = (_MX_DOUBLE_CLASS if is_double else _MX_SINGLE_CLASS) | (
            _COMPLEX_FLAG if var.complex_ else 0
        )
        fh.write(struct.pack("<II", _MI_MATRIX, var.element_bytes()))
        fh.write(struct.pack("<IIII", _MI_UINT32, 8, flags, 0))
        fh.write(struct.pack("<IIii", _MI_INT32, 8, var.rows, var.cols))
        fh.write(struct.pack("<II", _MI_INT8, len(name)) + name + b"\0" * _pad8(len(name)))
        per_block = max(1, _BLOCK_BYTES // max(1, var.rows * var.dtype.itemsize))
        for part in maps:
            fh.write(struct.pack("<II", _MI_DOUBLE if is_double else _MI_SINGLE, var.part_bytes))
            for j in range(0, var.cols, per_block):
                # Column-major data = rows of the (cols, rows) map, already contiguous.
                block = part[j : j + per_block]
                fh.write(np.ascontiguousarray(block, dtype=var.dtype.newbyteorder("<")).tobytes())
            fh.write(b"\0" * _pad8(var.part_bytes))


def _header() -> bytes:
    text = (f"MATLAB 5.0 MAT-file, Platform: csideploy, Created on: {time.asctime()}").encode()
    return text[:116].ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + b"IM"


def _chmod_default(path: str) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


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
