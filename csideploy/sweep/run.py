"""Run a sweep: the grid's trained cells as shards, then one report comparing them all.

Files in `--out DIR`: `cells/<cell>/` (each a complete export bundle, with perf.json when a
target was benched), `report.html` / `report.md` (the report's multi-bundle comparison:
NMSE, latency and size of every file of every cell) and `sweep.json` (the cells, those
skipped and why, and one row per file with its figures).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csideploy.cluster.runtime import check_choice, ray_runtime
from csideploy.cluster.shards import Shard, run_shards
from csideploy.errors import CsiDeployError, OutputExistsError
from csideploy.report.markdown import write_atomic
from csideploy.sweep.cell import CellOptions, CellSink, refuse_foreign, run_cell, settings
from csideploy.sweep.grid import build_grid, split_trained

SUMMARY = "sweep.json"
CELLS = "cells"


@dataclass(frozen=True)
class SweepConfig:
    """A grid and where it goes; `workers` / `address` as `--workers` / `--ray-address`."""

    models: tuple[str, ...]
    crs: tuple[int, ...]
    out: Path
    formats: tuple[str, ...] = ("onnx",)
    int8_modes: tuple[str, ...] = ("none",)
    targets: tuple[str, ...] = ()
    options: CellOptions = field(default_factory=CellOptions)
    workers: int | None = None
    address: str | None = None
    progress: bool = False


@dataclass
class SweepResult:
    """What ran, what was kept from an earlier run, what was skipped, and the files written."""

    cells: list[str]
    ran: list[str]
    skipped: list[tuple[str, str]]
    rows: list[dict[str, Any]]
    report_html: Path
    report_md: Path
    summary: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "cells": self.cells,
            "ran": self.ran,
            "kept": [c for c in self.cells if c not in self.ran],
            "skipped": [{"cell": c, "reason": r} for c, r in self.skipped],
            "rows": self.rows,
            "report_html": str(self.report_html),
            "report_md": str(self.report_md),
            "summary": str(self.summary),
        }


def run_sweep(config: SweepConfig) -> SweepResult:
    """Run every trained cell not already complete in `config.out`, then the report."""
    from csideploy.report import render_report

    check_choice(config.workers, config.address)
    grid = build_grid(config.models, config.crs, config.formats, config.int8_modes, config.targets)
    cells, skipped = split_trained(grid)
    if not cells:
        reasons = "; ".join(reason for _, reason in skipped)
        raise CsiDeployError(f"no cell of the grid has trained weights: {reasons}")
    out = Path(config.out)
    _refuse_foreign_out(out)
    folder = out / CELLS
    expected = {cell.name: settings(cell, config.options) for cell in cells}
    refuse_foreign(folder, expected)
    shards = [Shard(cell.name, run_cell, (cell, config.options)) for cell in cells]
    with ray_runtime(config.workers, config.address) as ray:
        ran = run_shards(
            shards, CellSink(folder, expected), ray, progress=config.progress, desc="cells"
        )
    directories = [folder / cell.name for cell in cells]
    files = render_report(directories, out)
    rows = _rows(directories)
    summary = {
        "schema": "csideploy-sweep/1",
        "cells": [{"name": cell.name, **cell.as_dict()} for cell in cells],
        "skipped": [{"cell": c, "reason": r} for c, r in skipped],
        "options": settings(cells[0], config.options)["options"],
        "rows": rows,
    }
    path = write_atomic(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    names = [cell.name for cell in cells]
    return SweepResult(names, ran, skipped, rows, files.html, files.markdown, path)


def _refuse_foreign_out(out: Path) -> None:
    """An existing --out must be a sweep's folder (or empty): its report files are replaced."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a directory")
    ours = (out / SUMMARY).is_file() or (out / CELLS).is_dir()
    if out.is_dir() and any(out.iterdir()) and not ours:
        raise OutputExistsError(
            f"{out}: holds files but no sweep; a sweep writes only into an empty folder "
            "or one of its own"
        )


def _rows(directories: list[Path]) -> list[dict[str, Any]]:
    """One row per UE encoder file of every cell: bytes, NMSE, ΔNMSE, p50 latency, gates."""
    from csideploy.report import load_run

    rows = []
    for directory in directories:
        run = load_run(directory)
        for row in run.files:
            if row.role != "encoder":
                continue
            rows.append(
                {
                    "cell": directory.name,
                    "file": row.name,
                    "precision": row.precision,
                    "bytes": row.bytes,
                    "nmse_db": row.nmse_db,
                    "delta_nmse_db": row.delta_nmse_db,
                    "p50_us": row.latency.p50_us if row.latency else None,
                    "latency_source": row.latency.source if row.latency else None,
                    "passed": row.passed,
                }
            )
    return rows
