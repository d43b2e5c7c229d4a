"""One sweep cell: the export (and bench) of one grid point, returned as file bytes.

A cell runs in a scratch folder wherever its worker is and returns every file of the bundle,
so a Ray worker needs no shared file system; the driver (`CellSink`) writes them into
`cells/<name>/` through a temporary folder and one rename, so a cell folder is either
complete or absent. `cells/<name>.sweep_cell.json`, written just before the rename, records
the cell and its settings (beside the bundle, which `verify` keeps to its manifest): a
rerun keeps a cell whose folder exists and whose record matches, and runs the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from csideploy.calibration.output_guard import _chmod_dir
from csideploy.errors import DataError, OutputExistsError
from csideploy.report.markdown import write_atomic
from csideploy.sweep.grid import Cell

CELL_RECORD = ".sweep_cell.json"
"""Suffix of a cell's record, `cells/<name>.sweep_cell.json`."""
CELL_SCHEMA = "csideploy-sweep-cell/1"


@dataclass(frozen=True)
class CellOptions:
    """Settings every cell shares: evaluation / calibration sizes and bench runs."""

    eval_samples: int = 1000
    calib_samples: int = 256
    runs: int = 200
    warmup: int = 20


def settings(cell: Cell, options: CellOptions) -> dict[str, Any]:
    """What decides a cell's files: its grid point and the shared options."""
    return {"schema": CELL_SCHEMA, "cell": cell.as_dict(), "options": asdict(options)}


def run_cell(cell: Cell, options: CellOptions) -> dict[str, bytes]:
    """Export `cell` (and bench it on its target); every file of the bundle by relative path."""
    from csideploy.pipeline.config import ExportConfig
    from csideploy.pipeline.run import run_export

    with tempfile.TemporaryDirectory(prefix="csideploy-cell-") as scratch:
        out = Path(scratch) / cell.name
        config = ExportConfig(
            model=cell.model,
            cr=cell.cr,
            int8=cell.int8,
            formats=(cell.fmt,),
            eval_samples=options.eval_samples,
            calib_samples=options.calib_samples,
            out=str(out),
        )
        run_export(config)
        if cell.target is not None:
            from csideploy.bench import BenchConfig, run_bench

            bench = BenchConfig(
                target=cell.target, runs=options.runs, warmup=options.warmup, roofline=False
            )
            run_bench(out, bench)
        files = {
            path.relative_to(out).as_posix(): path.read_bytes()
            for path in sorted(out.rglob("*"))
            if path.is_file()
        }
    return files


class CellSink:
    """`ShardSink` writing cell results into `cells/<name>/` (complete, or not at all)."""

    def __init__(self, folder: Path, expected: dict[str, dict[str, Any]]) -> None:
        self.folder = Path(folder)
        self.expected = expected

    def done(self, name: str) -> bool:
        complete = (self.folder / name).is_dir()
        return complete and read_record(self.folder, name) == self.expected[name]

    def save(self, name: str, files: dict[str, bytes]) -> None:
        """Write `files` into a temporary sibling, the record, then rename it to `name`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        record = json.dumps(self.expected[name], indent=2) + "\n"
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=self.folder))
        try:
            for relative, data in files.items():
                path = staging / _safe_relative(relative, name)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            _chmod_dir(staging)
            write_atomic(self.folder / f"{name}{CELL_RECORD}", record)
            os.rename(staging, self.folder / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def read_record(folder: Path, name: str) -> dict[str, Any] | None:
    """The record of cell `name` in the cells folder, or None when absent or unreadable."""
    try:
        record = json.loads((folder / f"{name}{CELL_RECORD}").read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


def refuse_foreign(folder: Path, expected: dict[str, dict[str, Any]]) -> None:
    """OutputExistsError when a cell folder exists that this sweep did not write with these
    settings: it is never replaced (choose another --out, or move it away)."""
    for name, wanted in expected.items():
        path = folder / name
        if os.path.lexists(path) and read_record(folder, name) != wanted:
            why = "other settings" if read_record(folder, name) else "no sweep record"
            raise OutputExistsError(
                f"{path}: exists with {why}; a sweep never replaces it (use another --out)"
            )


def _safe_relative(relative: str, cell: str) -> PurePosixPath:
    """A relative path inside the cell, or DataError (a worker's result is checked)."""
    path = PurePosixPath(relative)
    if path.is_absolute() or not path.parts or ".." in path.parts:
        raise DataError(f"cell {cell} returned a file outside its folder: {relative!r}")
    return path
