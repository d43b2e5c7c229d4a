"""report.md and report.html for one or more artifact directories: the orchestration.

`load` reads each directory into typed rows, `plots` draws the PNGs (also linked from
report.md), `page` writes the self-contained HTML, `markdown` owns the csideploy block of
report.md. `render_report` is what `csideploy report`, `bench` and `export` call; the export
passes its own latency check, written as `perf.export.json` so a later `csideploy report`
shows it too.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import csideploy.report.plots as draw
from csideploy import runner
from csideploy.errors import CsiDeployError
from csideploy.fileio import write_atomic
from csideploy.report.choose import choose
from csideploy.report.load import EXPORT_LATENCY, Run, load_run, unique_labels
from csideploy.report.markdown import (
    BLOCK_BEGIN,
    BLOCK_END,
    latency_markdown,
    md_table,
    replace_block,
    update_report_md,
    write_latency_section,
)
from csideploy.report.page import page
from csideploy.report.tables import FILE_HEADER, file_cells

PLOTS_DIR = "plots"
MANIFEST = "manifest.json"

__all__ = [
    "BLOCK_BEGIN",
    "BLOCK_END",
    "ReportFiles",
    "export_latency_document",
    "load_run",
    "render_report",
    "replace_block",
    "write_latency_section",
]


@dataclass(frozen=True)
class ReportFiles:
    """What `render_report` wrote."""

    html: Path
    markdown: Path
    plots: tuple[Path, ...]
    problems: tuple[str, ...] = ()
    ship: tuple[str | None, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "html": str(self.html),
            "markdown": str(self.markdown),
            "plots": [str(p) for p in self.plots],
            "ship": list(self.ship),
            "problems": list(self.problems),
        }


def export_latency_document(result: Any) -> dict[str, Any]:
    """perf.export.json: the export's quick per-file latency (an `ExportResult`)."""
    return {
        "source": "export",
        "results": [{"file": a.file, **a.latency.to_dict()} for a in result.artifacts if a.latency],
    }


def render_report(
    directories: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    export_result: Any = None,
) -> ReportFiles:
    """Write report.html, the csideploy block of report.md and the PNG plots.

    With one directory the report goes into it by default; with several, `out_dir` is
    required (one page compares them all). `export_result`: the export's own result, whose
    latency check is saved beside the files first.
    """
    if not directories:
        raise CsiDeployError("report needs at least one artifact directory")
    if out_dir is None and len(directories) > 1:
        raise CsiDeployError("several directories need --out DIR for the combined report")
    if export_result is not None:
        document = export_latency_document(export_result)
        text = json.dumps(document, indent=2) + "\n"
        write_atomic(Path(directories[0]) / EXPORT_LATENCY, text)
    runs = [load_run(d) for d in directories]
    unique_labels(runs)
    out = Path(out_dir) if out_dir is not None else runs[0].directory
    # In a bundle (an export's directory, with its manifest) the plots live only in
    # report.html: a PNG there would be a file the manifest does not list.
    keep = export_result is None and not (out / MANIFEST).is_file()
    with tempfile.TemporaryDirectory(prefix="csideploy-plots-") as scratch:
        figures = _draw(runs, out / PLOTS_DIR if keep else Path(scratch))
        html_path = write_atomic(out / "report.html", page(runs, figures))
    linked = figures if keep else []
    md_path = update_report_md(out / "report.md", _markdown(runs, out, linked))
    return ReportFiles(
        html_path,
        md_path,
        tuple(png for _, png in linked),
        tuple(p for run in runs for p in run.problems),
        tuple(choose(run).file for run in runs),
    )


def _draw(runs: Sequence[Run], folder: Path) -> list[tuple[str, Path]]:
    """(alt text, PNG) of every plot: the trade-off, SQNR per INT8 file, latency histograms."""
    figures: list[tuple[str, Path]] = []
    pareto = draw.pareto_png(runs, folder / "pareto.png")
    if pareto:
        figures.append(("NMSE vs latency vs size of every UE file", pareto))
    several = len(runs) > 1
    for index, run in enumerate(runs):
        tag = f"{index}_" if several else ""
        for row in run.files:
            stem = runner.output_stem(row.name)
            png = draw.sqnr_png(run, row, folder / f"sqnr_{tag}{stem}.png")
            if png:
                figures.append((f"per-tensor SQNR of {run.label}: {row.name}", png))
        for row in run.files:
            stem = runner.output_stem(row.name)
            png = draw.histogram_png(run, row, folder / f"latency_{tag}{stem}.png")
            if png:
                figures.append((f"latency distribution of {run.label}: {row.name}", png))
    return figures


def _markdown(runs: Sequence[Run], out: Path, figures: list[tuple[str, Path]]) -> str:
    """The csideploy block of report.md: what to ship, the files table, latency, plots."""
    several = len(runs) > 1
    parts = ["## What to ship", ""]
    for run in runs:
        choice = choose(run)
        who = f"{run.label}: " if several else ""
        head = f"**{choice.file}**" if choice.file else "nothing"
        parts += [f"{who}{head}. " + " ".join(choice.reasons), ""]
    rows = [
        [c.text for c in file_cells(run, row, f"{run.label}/" if several else "")]
        for run in runs
        for row in run.files
    ]
    if rows:
        parts += ["## Files", "", md_table(FILE_HEADER, rows), ""]
    parts.append(latency_markdown(runs))
    if figures:
        links = [f"![{alt}]({png.relative_to(out).as_posix()})" for alt, png in figures]
        parts.append("## Plots\n\n" + "\n\n".join(links) + "\n")
    problems = [p for run in runs for p in run.problems]
    if problems:
        parts.append("Notes: " + "; ".join(problems) + "\n")
    return "\n".join(parts)
