"""`data check`: which files of a directory are the released COST2100 data, byte for byte.

Users download `DATA_H*.mat` from mirrors of varying trust. The published sha256 and sizes
(from a public Git LFS copy of the release) name each released file: a file whose size
matches one of them is hashed (streamed in 1 MiB blocks, so memory stays bounded, with a
progress bar for large files) and named when the hash matches; every other file is reported as
unknown. Each .mat file is also opened as data (v5 through scipy, v7.3 through h5py) to show
its variables and shapes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csideploy.errors import DataError

RELEASED: dict[str, tuple[str, int]] = {
    "DATA_Htrainin.mat": (
        "db9d232fc347178c596653a8c0402956517353fbfa1d6d0eae8041cb3c95e2c2",
        1_429_768_613,
    ),
    "DATA_Hvalin.mat": (
        "aee1fc970466c198d69eca745b1fd3545b729576da728b52391a62299a3e72ed",
        428_919_585,
    ),
    "DATA_Htestin.mat": (
        "9740d1f57a03cb11b6d325aebb8f90fe175a5e7f80ef081817497931ce364c75",
        285_973_959,
    ),
    "DATA_HtestFin_all.mat": (
        "4971a6040f6086b44d9fa8e2173ac0a839a0411a44ec8a79ef843b7296d0f1da",
        1_234_713_165,
    ),
    "DATA_Htrainout.mat": (
        "9f52eaed29ea8f8b9eeae2cf843093341a3d02c216430841cb1428bbdb660909",
        1_473_870_791,
    ),
    "DATA_Hvalout.mat": (
        "b0f18183749dde5b79654d1f1c611b11848b2e783d213ee2152499cba432c986",
        442_171_698,
    ),
    "DATA_Htestout.mat": (
        "581d69559862cc87301ece158442f4f14b9e38f57379d1a245e396aa0ac58c98",
        294_782_702,
    ),
    "DATA_HtestFout_all.mat": (
        "157c935b333701a429eea8430c19cd807fe9dd2cf0be7665cf3db7153d8a1012",
        1_233_171_880,
    ),
}
"""Released file name -> (sha256, bytes)."""

_BLOCK = 1 << 20
_PROGRESS_FROM = 64 << 20
"""Files at least this large get a progress bar while they are hashed."""


@dataclass
class FileReport:
    """What `check_directory` found out about one file."""

    name: str
    size: int
    status: str  # "released", "modified" (size of a released file, other hash), "unknown"
    released_as: str | None = None
    sha256: str | None = None
    mat_format: str | None = None
    variables: dict[str, list[int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One human-readable line."""
        if self.status == "released":
            what = f"released {self.released_as} (sha256 and size match)"
        elif self.status == "modified":
            what = f"NOT the released {self.released_as}: same size, different sha256"
        else:
            what = "unknown: not a released COST2100 file"
        data = ""
        if self.mat_format:
            shapes = ", ".join(f"{k} {tuple(v)}" for k, v in self.variables.items())
            data = f"; MATLAB {self.mat_format}" + (f", {shapes}" if shapes else "")
        note = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"{self.name}: {what}, {self.size:,} bytes{data}{note}"


def sha256_file(path: Path, progress: bool = False) -> str:
    """The sha256 of `path`, read in 1 MiB blocks (bounded memory)."""
    from tqdm.auto import tqdm

    digest = hashlib.sha256()
    size = path.stat().st_size
    show = progress and size >= _PROGRESS_FROM
    with (
        open(path, "rb") as fh,
        tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not show) as bar,
    ):
        while block := fh.read(_BLOCK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def check_file(
    path: Path, progress: bool = False, released: dict[str, tuple[str, int]] = RELEASED
) -> FileReport:
    """Name `path` against the `released` files (name -> (sha256, bytes)); describe its data."""
    size = path.stat().st_size
    report = FileReport(name=path.name, size=size, status="unknown")
    by_size = [name for name, (_h, s) in released.items() if s == size]
    if by_size:
        report.sha256 = sha256_file(path, progress)
        match = [name for name in by_size if released[name][0] == report.sha256]
        report.status = "released" if match else "modified"
        report.released_as = (match or by_size)[0]
    elif path.name in released:
        expected = released[path.name][1]
        report.notes.append(f"named like a released file, whose size is {expected:,} bytes")
    if path.suffix.lower() == ".mat":
        _describe_mat(path, report)
    return report


def _describe_mat(path: Path, report: FileReport) -> None:
    """Fill in the MATLAB format and variable shapes (MATLAB's row/column order)."""
    from csideploy.calibration.io import _is_hdf5

    try:
        if _is_hdf5(path):
            report.mat_format, report.variables = "v7.3 (HDF5)", _v73_shapes(path)
        else:
            import scipy.io

            found = scipy.io.whosmat(path)
            report.mat_format = "v5"
            report.variables = {name: list(shape) for name, shape, _cls in found}
    except Exception as exc:  # a broken file is a finding, not a failure of the check
        report.notes.append(f"not readable as a .mat file: {type(exc).__name__}: {exc}"[:200])


def _v73_shapes(path: Path) -> dict[str, list[int]]:
    """Variables of a v7.3 file through h5py, shapes in MATLAB order (h5py's reversed)."""
    try:
        import h5py
    except ImportError:
        return {}
    with h5py.File(path, "r") as h5:
        return {
            name: list(reversed(item.shape))
            for name, item in h5.items()
            if not name.startswith("#") and isinstance(item, h5py.Dataset)
        }


def check_directory(
    directory: str | os.PathLike[str],
    progress: bool = False,
    released: dict[str, tuple[str, int]] = RELEASED,
) -> list[FileReport]:
    """A report per regular file of `directory` (sorted by name); DataError if no directory."""
    root = Path(directory)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "directory not found"
        raise DataError(f"{root}: {what}")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    return [check_file(p, progress, released) for p in files]


def summary(reports: list[FileReport]) -> dict[str, Any]:
    """Counts by status and the released files that are missing."""
    found = {r.released_as for r in reports if r.status == "released"}
    return {
        "released": sorted(found),
        "modified": [r.name for r in reports if r.status == "modified"],
        "unknown": [r.name for r in reports if r.status == "unknown"],
        "missing": [name for name in RELEASED if name not in found],
    }
