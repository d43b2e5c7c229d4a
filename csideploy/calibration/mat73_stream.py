"""MATLAB v7.3 (HDF5) .mat files written a chunk of rows at a time, for variables over 4 GiB.

MATLAB v5 cannot hold a variable of more than 2**32 bytes (524,287 CSI samples); the released
COST2100 files are v7.3 anyway. A v7.3 file is HDF5 with a 512-byte user block that starts
with the MATLAB header; a MATLAB (rows, cols) array is stored as an HDF5 (cols, rows) dataset
with a `MATLAB_class` attribute, complex numbers as a (real, imag) compound type.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration.mat_write import AbortsOnError
from csideploy.errors import DataError, MissingDependencyError, ShapeError

_USERBLOCK = 512
_ROWS_PER_CHUNK = 256


class Mat73StreamWriter(AbortsOnError):
    """The v7.3 counterpart of `mat_stream.MatStreamWriter` (same methods, same guarantees)."""

    def __init__(
        self, path: str | os.PathLike[str], variables: Mapping[str, tuple[int, int, Any]]
    ) -> None:
        h5py = _import_h5py(Path(path))
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        self._tmp = Path(tmp)
        self._file: Any = h5py.File(tmp, "w", userblock_size=_USERBLOCK)
        self._rows: dict[str, int] = {}
        self._written: dict[str, int] = {}
        for name, (rows, cols, dtype) in variables.items():
            self._create(name, rows, cols, np.dtype(dtype))

    def _create(self, name: str, rows: int, cols: int, dtype: np.dtype) -> None:
        """An HDF5 dataset (cols, rows) chunked by whole rows, tagged with its MATLAB class."""
        if rows < 1 or cols < 1:
            raise ShapeError(f"{name}: shape ({rows}, {cols}) is empty")
        part = np.dtype(np.float64 if dtype in (np.float64, np.complex128) else np.float32)
        stored = np.dtype([("real", part), ("imag", part)]) if dtype.kind == "c" else part
        ds = self._file.create_dataset(
            name, shape=(cols, rows), dtype=stored, chunks=(cols, min(rows, _ROWS_PER_CHUNK))
        )
        ds.attrs["MATLAB_class"] = np.bytes_("double" if part == np.float64 else "single")
        self._rows[name], self._written[name] = rows, 0

    def write(self, name: str, start: int, block: np.ndarray) -> None:
        """Rows `start : start + len(block)` of variable `name`."""
        ds = self._file[name]
        block = np.asarray(block).reshape(len(block), -1)
        if block.shape[1] != ds.shape[0] or start < 0 or start + len(block) > ds.shape[1]:
            raise ShapeError(
                f"{name}: block of shape {block.shape} at row {start} does not fit "
                f"({ds.shape[1]}, {ds.shape[0]})"
            )
        if ds.dtype.names:
            data = np.empty((block.shape[1], len(block)), dtype=ds.dtype)
            data["real"], data["imag"] = block.real.T, block.imag.T
        else:
            data = block.T.astype(ds.dtype)
        ds[:, start : start + len(block)] = data
        self._written[name] += len(block)

    def close(self) -> Path:
        """Finish the file (header in the user block) and move it to `path`."""
        missing = {n: r - self._written[n] for n, r in self._rows.items() if self._written[n] != r}
        if missing:
            self.abort()
            raise DataError(f"{self.path}: rows not written (or written twice): {missing}")
        try:
            self._file.close()
            with open(self._tmp, "r+b") as fh:
                fh.write(_header())
                fh.flush()
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (nothing is written at `path`)."""
        with contextlib.suppress(Exception):  # already closed
            self._file.close()
        self._tmp.unlink(missing_ok=True)


def _import_h5py(path: Path) -> Any:
    """h5py, or a MissingDependencyError saying why it is needed."""
    try:
        import h5py
    except ImportError:
        raise MissingDependencyError(
            f"{path}: a variable over 4 GiB needs a MATLAB v7.3 file, which needs h5py "
            "(pip install 'csideploy[hdf5]'); or write fewer samples"
        ) from None
    return h5py


def _header() -> bytes:
    """The 128-byte MATLAB 7.3 header at the start of the user block."""
    text = (
        f"MATLAB 7.3 MAT-file, Platform: csideploy, Created on: {time.asctime()} HDF5 schema 1.00 ."
    )
    return text.encode()[:116].ljust(116, b" ") + b" " * 8 + struct.pack("<H", 0x0200) + b"IM"
