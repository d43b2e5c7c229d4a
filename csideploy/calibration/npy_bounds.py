"""Bounds on .npy / .npz files, checked from their headers before numpy allocates anything.

A .npy header states the array's shape and dtype; numpy believes it and allocates that much
before reading. A 200-byte file whose header claims 10^12 samples would ask for terabytes,
and an .npz member can claim far more than its stored bytes. These checks compare what a
header claims with the bytes that are there, and refuse object arrays outright.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from csideploy.errors import DataError

_MAX_NPZ_EXPANSION = 1000
"""Most an .npz member may expand over its stored size (all-constant arrays compress ~1000x)."""
_NPY_MAGIC = b"\x93NUMPY"


def check_npy_header(file: Path) -> None:
    """A DataError unless the .npy header's shape and dtype fit in the bytes the file holds.

    Checked before numpy allocates anything: a 200-byte file whose header claims 10^12
    samples would otherwise ask for terabytes."""
    try:
        with open(file, "rb") as fh:
            magic = fh.read(len(_NPY_MAGIC))
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc})") from exc
    if magic != _NPY_MAGIC:
        raise DataError(f"{file}: not a NumPy .npy file (the file does not start with its header)")
    try:
        with open(file, "rb") as fh:
            shape, dtype, size = _npy_header(fh)
            available = file.stat().st_size - fh.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{file}: not a readable .npy array ({exc})") from exc
    _check_claimed(file, shape, dtype, size, available)


def _npy_header(fh: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes the array needs) from a .npy header, nothing else read."""
    version = np.lib.format.read_magic(fh)
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    if version not in readers:
        raise ValueError(f".npy format version {version} (1.0 or 2.0 expected)")
    shape, _fortran, dtype = readers[version](fh)
    size = int(np.prod(shape, dtype=object)) * dtype.itemsize if not dtype.hasobject else 0
    return shape, dtype, size


def _check_claimed(
    file: Path, shape: tuple[int, ...], dtype: np.dtype, size: int, available: int
) -> None:
    if dtype.hasobject:
        raise DataError(f"{file}: not a readable .npy array (it holds pickled Python objects)")
    if size > available:
        raise DataError(
            f"{file}: its header claims a {dtype} array of shape {shape} ({size} bytes) but the "
            f"file holds {available} bytes of data: truncated or forged"
        )


def check_npz_members(file: Path) -> None:
    """Each .npz member's header checked against the member's stored size, before loading."""
    import zipfile

    try:
        with zipfile.ZipFile(file) as archive:
            for info in archive.infolist():
                if info.file_size > info.compress_size * _MAX_NPZ_EXPANSION + 2**20:
                    raise DataError(
                        f"{file}: {info.filename} claims {info.file_size} bytes from "
                        f"{info.compress_size} stored (a zip bomb?)"
                    )
                if info.filename.endswith(".npy"):
                    with archive.open(info) as fh:
                        shape, dtype, size = _npy_header(fh)
                        header = fh.tell()
                    _check_claimed(file, shape, dtype, size, info.file_size - header)
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise DataError(f"{file}: not a readable .npz archive ({exc})") from exc
