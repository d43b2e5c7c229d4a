"""Writing CSI as MATLAB v5 files in the COST2100 layout, atomically."""

from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from csideploy.calibration.io import (
    CSI_SHAPE,
    CSI_WIDTH,
    FREQ_SHAPE,
    FREQ_WIDTH,
)
from csideploy.errors import ShapeError


def save_csi_mat(
    path: str | os.PathLike[str],
    ht: np.ndarray,
    *,
    variable: str = "HT",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write CSI as MATLAB v5, `variable` = (N, 2048) float32/float64, atomically.

    `ht` is (N, 2048) or (N, 2, 32, 32); float64 stays float64, anything else is written as
    float32. `extra` adds more variables to the file. Returns the path written.
    """
    arr = np.asarray(ht)
    if arr.ndim < 2 or arr.shape[1:] not in ((CSI_WIDTH,), CSI_SHAPE) or len(arr) == 0:
        raise ShapeError(f"{variable}: expected shape (N, 2048) or (N, 2, 32, 32), got {arr.shape}")
    dtype = np.float64 if arr.dtype == np.float64 else np.float32
    rows = np.ascontiguousarray(arr.reshape(len(arr), CSI_WIDTH), dtype=dtype)
    return _savemat_atomic(Path(path), _mdict(variable, rows, extra))


def save_csi_freq_mat(
    path: str | os.PathLike[str],
    hf: np.ndarray,
    *,
    variable: str = "HF_all",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write frequency-domain CSI as MATLAB v5, `variable` = (N, 4000) complex, atomically."""
    arr = np.asarray(hf)
    if arr.ndim < 2 or arr.shape[1:] not in ((FREQ_WIDTH,), FREQ_SHAPE) or len(arr) == 0:
        raise ShapeError(f"{variable}: expected shape (N, 4000) or (N, 32, 125), got {arr.shape}")
    dtype = np.complex128 if arr.dtype == np.complex128 else np.complex64
    rows = np.ascontiguousarray(arr.reshape(len(arr), FREQ_WIDTH), dtype=dtype)
    return _savemat_atomic(Path(path), _mdict(variable, rows, extra))


def _mdict(variable: str, rows: np.ndarray, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """The variables to save, with `extra` checked not to overwrite the main one."""
    mdict: dict[str, Any] = {variable: rows}
    for key, value in (extra or {}).items():
        if key == variable:
            raise ValueError(f"extra variable {key!r} would overwrite the CSI variable")
        if not key.isidentifier() or key.startswith("_"):
            raise ValueError(f"extra variable name {key!r} is not a valid MATLAB name")
        mdict[key] = value
    return mdict


def _savemat_atomic(path: Path, mdict: dict[str, Any]) -> Path:
    """savemat into a temp file beside `path`, then os.replace: readers never see half a file."""
    import scipy.io

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            scipy.io.savemat(fh, mdict, format="5", do_compression=False, oned_as="row")
            fh.flush()
            os.fsync(fh.fileno())
        chmod_default(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def chmod_default(path: str) -> None:
    """Give a mkstemp file (0600) the permissions a plain open() would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


_Writer = TypeVar("_Writer", bound="AbortsOnError")


class AbortsOnError(ABC):
    """A streaming writer used as a context manager drops its temporary file on an error."""

    @abstractmethod
    def abort(self) -> None:
        """Drop what was written so far (each writer says how)."""

    def __enter__(self: _Writer) -> _Writer:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            self.abort()
