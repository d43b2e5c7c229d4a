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
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration.npy_bounds import check_npy_header, check_npz_members
from csideploy.errors import DataError, ShapeError

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


# --------------------------------------------------------------------------- writing


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
        _chmod_default(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _chmod_default(path: str) -> None:
    """Give a mkstemp file (0600) the permissions a plain open() would (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# --------------------------------------------------------------------------- dataset layout


def split_filename(split: str, scenario: str, ext: str = ".mat") -> str:
    """The COST2100 file name of a split, e.g. `DATA_Htrainin.mat`, `DATA_HtestFout_all.mat`.

    `split` is train, val, test, or `testF` for the frequency-domain HF_all file.
    """
    tag = _scenario_tag(scenario)
    if split == "testF":
        return f"DATA_HtestF{tag}_all{ext}"
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or testF")
    return f"DATA_H{split}{tag}{ext}"


def _scenario_tag(scenario: str) -> str:
    """'in' or 'out' for a scenario name (indoor/outdoor/in/out)."""
    try:
        return SCENARIOS[scenario.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown scenario {scenario!r}; expected indoor or outdoor") from None


def _candidates(data_dir: Path, split: str, scenario: str) -> list[Path]:
    """Existing files for (split, scenario), in order of preference (.mat, .npz, .npy)."""
    exts = (".mat",) if split == "testF" else DATA_EXTENSIONS
    names = [split_filename(split, scenario, ext) for ext in exts]
    return [data_dir / n for n in names if (data_dir / n).is_file()]


def find_split(data_dir: str | os.PathLike[str], split: str, scenario: str) -> Path:
    """The file of `split` (train/val/test/testF) and `scenario` in `data_dir`.

    Looks for `DATA_H{split}{in,out}.mat` (then .npz, .npy). A DataError lists what the
    directory holds when the file is not there.
    """
    root = _existing_dir(data_dir)
    found = _candidates(root, split, scenario)
    if found:
        return found[0]
    raise DataError(
        f"{root}: no {split_filename(split, scenario)} for the {split} split "
        f"({_scenario_name(scenario)}); the directory holds: {_listing(root)}"
    )


def resolve_split(
    data_dir: str | os.PathLike[str], split: str, scenario: str | None = None
) -> Path:
    """Like `find_split`, with `scenario` inferred when only one scenario is present."""
    root = _existing_dir(data_dir)
    if scenario is not None:
        return find_split(root, split, scenario)
    present = [s for s in ("indoor", "outdoor") if _candidates(root, split, s)]
    if len(present) == 1:
        return _candidates(root, split, present[0])[0]
    if len(present) == 2:
        raise DataError(
            f"{root}: holds both indoor and outdoor {split} data; choose one with the "
            "scenario (indoor or outdoor)"
        )
    raise DataError(
        f"{root}: no {split} split found (expected {split_filename(split, 'in')} or "
        f"{split_filename(split, 'out')}); the directory holds: {_listing(root)}"
    )


def resolve_data(
    spec: str | os.PathLike[str], *, split: str = "test", scenario: str | None = None
) -> Path:
    """A CSI file from `spec`: the file itself, or `split` of the dataset directory `spec`."""
    path = Path(spec)
    if path.is_dir():
        return resolve_split(path, split, scenario)
    if not path.exists():
        raise DataError(f"{path}: CSI data file or directory not found")
    return path


def _existing_dir(data_dir: str | os.PathLike[str]) -> Path:
    """`data_dir` as a Path, or a DataError when it is not a directory."""
    root = Path(data_dir)
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "directory not found"
        raise DataError(f"{root}: data {what}")
    return root


def _scenario_name(scenario: str) -> str:
    return "indoor" if _scenario_tag(scenario) == "in" else "outdoor"


def _listing(root: Path, limit: int = 20) -> str:
    """The names in `root`, sorted, at most `limit` of them, or `(nothing)`."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not names:
        return "(nothing)"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
