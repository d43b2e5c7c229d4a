"""Reading and writing CSI data in the COST2100 format every CSI-feedback paper shares.

The format (see docs/data.md): each `DATA_H{train,val,test}{in,out}.mat` holds one
variable `HT`, float, shape (N, 2048). A row is `[real 1024 | imag 1024]`; viewed row-major
as (N, 2, 32, 32) it is (sample, real/imag, angle, delay), the last axis being delay. Values
lie in [0, 1] with 0.5 meaning zero. `DATA_HtestF{in,out}_all.mat` holds `HF_all`, complex,
(N, 4000) = 32 angles x 125 subcarriers, used only for the cosine similarity rho.

Every problem a user can cause with a data file (missing, empty, wrong shape, NaN/inf,
un-normalised values, unknown format) raises `DataError` with the file and the problem named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration.npy_bounds import check_npy_header, check_npz_members
from csideploy.errors import DataError

CSI_SHAPE = (2, 32, 32)
CSI_WIDTH = 2048
FREQ_SHAPE = (32, 125)
FREQ_WIDTH = 4000
RANGE_TOLERANCE = 0.01
"""How far outside [0, 1] a value may lie before the data count as un-normalised."""

SPLITS = ("train", "val", "test")
SCENARIOS = {"indoor": "in", "in": "in", "outdoor": "out", "out": "out"}
DATA_EXTENSIONS = (".mat", ".npz", ".npy")


# --------------------------------------------------------------------------- reading


def load_csi(
    path: str | os.PathLike[str], *, variable: str | None = None, limit: int | None = None
) -> np.ndarray:
    """COST2100 CSI from `path` as float32 (N, 2, 32, 32), validated.

    `.mat` (v5 via scipy, v7.3 via h5py) reads `variable` (default `HT`); `.npz` reads
    `variable`, else `HT`, else `csi`, else its only array; `.npy` holds the array itself.
    Rows may be (N, 2048) or already (N, 2, 32, 32). `limit` keeps the first `limit` samples
    (read lazily where the format allows). Raises `DataError` for any bad file.
    """
    file = _existing_file(path)
    limit = _check_limit(limit)
    raw = _read_array(file, variable, default="HT", limit=limit, fallbacks=("csi",))
    return _validate_csi(raw, file)


def load_csi_freq(
    path: str | os.PathLike[str], *, variable: str | None = None, limit: int | None = None
) -> np.ndarray:
    """Frequency-domain CSI (`HF_all`) from `path` as complex64 (N, 32, 125), validated.

    Reads `variable` (default `HF_all`; a .npz may also hold its only array). Rows may be
    (N, 4000) (32 angles x 125 subcarriers, row-major) or (N, 32, 125). Only rho needs these.
    Raises `DataError` for any bad file.
    """
    file = _existing_file(path)
    limit = _check_limit(limit)
    raw = _read_array(file, variable, default="HF_all", limit=limit, fallbacks=())
    return _validate_freq(raw, file)


def _existing_file(path: str | os.PathLike[str]) -> Path:
    """`path` as a Path, or a DataError if it does not exist or is a directory."""
    file = Path(path)
    if file.is_dir():
        raise DataError(
            f"{file}: is a directory, expected a CSI file (.mat, .npy, .npz); "
            "a dataset directory is resolved with resolve_data(path, split=...)"
        )
    if not file.exists():
        raise DataError(f"{file}: CSI data file not found")
    return file


def _check_limit(limit: int | None) -> int | None:
    """`limit` checked to be None or a positive integer (a caller's mistake is a ValueError)."""
    if limit is not None and (isinstance(limit, bool) or int(limit) != limit or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    return None if limit is None else int(limit)


def _read_array(
    file: Path,
    variable: str | None,
    *,
    default: str,
    limit: int | None,
    fallbacks: tuple[str, ...],
) -> Any:
    """The raw array stored in `file`, dispatched on the extension.

    `variable` names the array; without it a .mat must hold `default`, a .npz `default`, one
    of `fallbacks`, or a single array.
    """
    ext = file.suffix.lower()
    if ext == ".mat":
        return _read_mat(file, variable or default, limit)
    if ext == ".npy":
        return _read_npy(file, limit)
    if ext == ".npz":
        return _read_npz(file, variable, (default, *fallbacks), limit)
    known = ", ".join(DATA_EXTENSIONS)
    raise DataError(f"{file}: unknown CSI file extension {ext or '(none)'!r}; expected {known}")


def _check_magic(file: Path, magics: tuple[bytes, ...], what: str) -> None:
    """A DataError unless `file` starts with one of `magics` (numpy would say 'pickled')."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc})") from exc
    if not head.startswith(magics):
        raise DataError(f"{file}: not a {what} (the file does not start with its header)")


def _read_npy(file: Path, limit: int | None) -> np.ndarray:
    """A .npy array, memory-mapped so that `limit` reads only what it keeps."""
    check_npy_header(file)
    try:
        arr = np.load(file, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{file}: not a readable .npy array ({exc})") from exc
    return np.array(_head(arr, limit))  # a writable in-memory copy, not a read-only map


def _read_npz(
    file: Path, variable: str | None, candidates: tuple[str, ...], limit: int | None
) -> np.ndarray:
    """The array of a .npz: `variable`, else the first of `candidates`, else the only one."""
    _check_magic(file, (b"PK\x03\x04", b"PK\x05\x06"), "NumPy .npz (zip) archive")
    check_npz_members(file)
    try:
        with np.load(file, allow_pickle=False) as npz:
            keys = list(npz.files)
            key = _pick_npz_key(file, keys, variable, candidates)
            return _head(npz[key], limit)
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{file}: not a readable .npz archive ({exc})") from exc


def _pick_npz_key(
    file: Path, keys: list[str], variable: str | None, candidates: tuple[str, ...]
) -> str:
    """Which key of a .npz holds the CSI, or a DataError listing the keys present."""
    if variable is not None:
        if variable in keys:
            return variable
        raise DataError(f"{file}: no array {variable!r}; arrays present: {_names(keys)}")
    for key in candidates:
        if key in keys:
            return key
    if len(keys) == 1:
        return keys[0]
    expected = " or ".join(repr(c) for c in candidates)
    raise DataError(
        f"{file}: cannot tell which array holds the CSI (expected {expected} or a single "
        f"array); arrays present: {_names(keys)}"
    )


def _read_mat(file: Path, variable: str, limit: int | None) -> np.ndarray:
    """`variable` of a MATLAB file: v5 through scipy, v7.3 (HDF5) through h5py."""
    if _is_hdf5(file):
        return _read_mat_v73(file, variable, limit)
    import scipy.io
    from scipy.io.matlab import MatReadError

    try:
        present = [name for name, _shape, _cls in scipy.io.whosmat(file)]
    except NotImplementedError:  # scipy's answer to v7.3 files it recognises by header
        return _read_mat_v73(file, variable, limit)
    except (MatReadError, ValueError, TypeError, OSError, EOFError) as exc:
        raise DataError(f"{file}: not a readable MATLAB .mat file ({exc})") from exc
    if variable not in present:
        raise DataError(f"{file}: no variable {variable!r}; variables present: {_names(present)}")
    try:
        arr = scipy.io.loadmat(file, variable_names=[variable])[variable]
    except (MatReadError, ValueError, TypeError, OSError, EOFError) as exc:
        raise DataError(f"{file}: cannot read variable {variable!r} ({exc})") from exc
    return _head(arr, limit)


def _is_hdf5(file: Path) -> bool:
    """Whether `file` is HDF5 (MATLAB v7.3 puts the HDF5 signature at byte 512)."""
    signature = b"\x89HDF\r\n\x1a\n"
    try:
        with open(file, "rb") as fh:
            head = fh.read(520)
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc})") from exc
    return head[:8] == signature or head[512:520] == signature


def _read_mat_v73(file: Path, variable: str, limit: int | None) -> np.ndarray:
    """`variable` of a v7.3 .mat through h5py, transposed back to MATLAB's row/column order.

    MATLAB writes column-major, so h5py sees an (N, 2048) MATLAB array as (2048, N). Complex
    arrays are a compound type with `real` and `imag` fields.
    """
    try:
        import h5py
    except ImportError:
        raise DataError(
            f"{file}: is a MATLAB v7.3 (HDF5) file; reading it needs h5py "
            "(pip install 'csideploy[hdf5]'), or re-save it in MATLAB with save(..., '-v7')"
        ) from None
    try:
        with h5py.File(file, "r") as h5:
            present = [k for k in h5 if not k.startswith("#")]
            if variable not in present:
                raise DataError(
                    f"{file}: no variable {variable!r}; variables present: {_names(present)}"
                )
            ds = h5[variable]
            if not isinstance(ds, h5py.Dataset):
                raise DataError(f"{file}: {variable!r} is a MATLAB struct/cell, not an array")
            data = ds[...] if ds.ndim != 2 or limit is None else ds[:, :limit]
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{file}: not a readable MATLAB v7.3 file ({exc})") from exc
    if data.dtype.names and {"real", "imag"} <= set(data.dtype.names):
        data = data["real"] + 1j * data["imag"]
    return _head(np.asarray(data).T, limit)


def _head(arr: Any, limit: int | None) -> Any:
    """The first `limit` rows of `arr` (all of them when `limit` is None or arr is 0-d)."""
    if limit is None or np.ndim(arr) == 0:
        return arr
    return arr[:limit]


def _names(names: list[str]) -> str:
    """A readable list of variable names, or `(none)`."""
    return ", ".join(repr(n) for n in names) if names else "(none)"


# --------------------------------------------------------------------------- validation


def _validate_csi(raw: Any, file: Path) -> np.ndarray:
    """`raw` checked to be real, non-empty, finite COST2100 CSI in [0, 1]; float32 (N,2,32,32)."""
    arr = np.asarray(raw)
    if arr.dtype.kind not in "fiu":
        raise DataError(
            f"{file}: CSI must be real numbers (real and imaginary parts side by side), "
            f"found dtype {arr.dtype}"
        )
    arr = _reshape_rows(arr, file, CSI_WIDTH, CSI_SHAPE, "CSI")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    check_csi_values(arr, file)
    return arr


def check_csi_values(arr: np.ndarray, file: str | os.PathLike[str]) -> None:
    """The value checks every CSI input gets (evaluate, train, infer): finite, in [0, 1]."""
    _check_finite(arr, Path(file))
    _check_range(arr, Path(file))


def _validate_freq(raw: Any, file: Path) -> np.ndarray:
    """`raw` checked to be complex, non-empty, finite HF_all; complex64 (N, 32, 125)."""
    arr = np.asarray(raw)
    if arr.dtype.kind != "c":
        raise DataError(
            f"{file}: frequency-domain CSI (HF_all) must be complex, found dtype {arr.dtype}"
        )
    arr = _reshape_rows(arr, file, FREQ_WIDTH, FREQ_SHAPE, "HF_all")
    arr = np.ascontiguousarray(arr, dtype=np.complex64)
    _check_finite(arr, file)
    return arr


def _reshape_rows(
    arr: np.ndarray, file: Path, width: int, shape: tuple[int, ...], what: str
) -> np.ndarray:
    """(N, width) or (N, *shape) viewed as (N, *shape); a DataError naming both shapes else."""
    expected = f"(N, {width}) or (N, {', '.join(map(str, shape))})"
    if arr.size == 0:
        raise DataError(f"{file}: {what} array is empty (shape {arr.shape}); expected {expected}")
    if arr.ndim == 2 and arr.shape[1] == width:
        return arr.reshape(len(arr), *shape)
    if arr.shape[1:] == shape:
        return arr
    hint = ""
    if arr.ndim == 2 and arr.shape[0] == width:
        hint = f" (it looks transposed: use the transpose, shape {arr.shape[::-1]})"
    raise DataError(f"{file}: {what} has shape {arr.shape}, expected {expected}{hint}")


def _check_finite(arr: np.ndarray, file: Path) -> None:
    """A DataError counting the NaN/inf values and naming the first sample that holds one."""
    finite = np.isfinite(arr)
    if finite.all():
        return
    bad = finite.size - int(np.count_nonzero(finite))
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    per_sample = ~finite.reshape(len(arr), -1).all(axis=1)
    first = int(np.argmax(per_sample))
    raise DataError(
        f"{file}: {bad} non-finite values ({n_nan} NaN, {bad - n_nan} inf) in "
        f"{int(per_sample.sum())} of {len(arr)} samples; first at sample index {first}"
    )


def _check_range(arr: np.ndarray, file: Path) -> None:
    """A DataError when values leave [0, 1] by more than `RANGE_TOLERANCE` (un-normalised)."""
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= -RANGE_TOLERANCE and hi <= 1.0 + RANGE_TOLERANCE:
        return
    raise DataError(
        f"{file}: values range over [{lo:.6g}, {hi:.6g}], outside [0, 1]: the data look "
        "un-normalised. COST2100 CSI is scaled into [0, 1] with 0.5 meaning zero "
        "(x = scale * H + 0.5); normalise it before use"
    )
