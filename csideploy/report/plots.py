"""The report's pictures, drawn with matplotlib's Agg canvas (no pyplot, no global backend).

Three kinds, each where a picture says more than a table: the NMSE x latency x size trade-off
of every UE file (marker area = bytes, Pareto front dotted), per-tensor SQNR of each INT8
file (worst tensors first, so a layer that should stay float stands out), and the latency
distribution of each file `csideploy bench` timed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csideploy.report.load import FileRow, Run
from csideploy.report.tables import format_us

SQNR_ROWS = 20


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    return path


def pareto_points(runs: Sequence[Run]) -> list[tuple[Run, FileRow]]:
    """UE files with an NMSE and a latency: the points of the trade-off plot."""
    return [
        (run, row)
        for run in runs
        for row in run.files
        if row.role == "encoder"
        and row.nmse_db is not None
        and math.isfinite(row.nmse_db)
        and row.latency is not None
    ]


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both latency and NMSE (lower is better for both)."""
    kept = []
    best_y = math.inf
    for x, y in sorted(points):
        if y < best_y:
            kept.append((x, y))
            best_y = y
    return kept


def pareto_png(runs: Sequence[Run], path: Path) -> Path | None:
    """NMSE (dB) against p50 latency, marker area by file size, the front dotted."""
    points = pareto_points(runs)
    if not points:
        return None
    figure = _figure(6.4, 4.2)
    axes = figure.add_subplot()
    largest = max(row.bytes or 1 for _, row in points)
    labels = list(dict.fromkeys(run.label for run, _ in points))
    offsets = ((12, 10), (12, -16), (-12, 10), (-12, -16))
    for rank, (run, row) in enumerate(sorted(points, key=lambda p: p[1].latency.p50_us)):
        assert row.latency is not None and row.nmse_db is not None
        color = f"C{labels.index(run.label) % 10}"
        area = 40 + 900 * (row.bytes or 0) / largest
        x, y = row.latency.p50_us, row.nmse_db
        axes.scatter(x, y, s=area, color=color, alpha=0.5, edgecolors="black")
        dx, dy = offsets[rank % len(offsets)]
        axes.annotate(
            row.name,
            (x, y),
            textcoords="offset points",
            xytext=(dx, dy),
            ha="left" if dx > 0 else "right",
            fontsize=8,
            arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6},
        )
    kept = front([(r.latency.p50_us, r.nmse_db) for _, r in points])  # type: ignore[union-attr,misc]
    if len(kept) > 1:
        xs, ys = zip(*kept, strict=True)
        axes.step(xs, ys, where="post", color="grey", linestyle=":", label="Pareto front")
    if len(labels) > 1 or len(kept) > 1:
        for index, label in enumerate(labels):
            axes.scatter([], [], color=f"C{index % 10}", alpha=0.5, label=label)
        # A fixed corner: "best" searches every point and is slow (and warns) on many files;
        # the upper right (slow and inaccurate) is where files are rarest.
        axes.legend(fontsize=8, loc="upper right")
    sources = {row.latency.source for _, row in points if row.latency}
    where = "csideploy bench" if sources == {"bench"} else "the export's quick check"
    axes.set_xlabel(f"p50 latency, batch 1, 1 thread (µs; {where})")
    axes.set_ylabel("NMSE (dB, lower is better)")
    axes.ticklabel_format(axis="y", useOffset=False, style="plain")
    axes.set_title("NMSE vs latency; marker area = file size", fontsize=10)
    axes.grid(alpha=0.3)
    axes.margins(0.3)
    return _png(figure, path)


def sqnr_png(run: Run, row: FileRow, path: Path) -> Path | None:
    """Horizontal bars of per-tensor SQNR (dB), worst first, for one quantized file."""
    finite = [x for x in row.layers if math.isfinite(x.sqnr_db)]
    layers = sorted(finite, key=lambda x: x.sqnr_db)[:SQNR_ROWS]
    if not layers:
        return None
    figure = _figure(6.4, max(2.4, 0.8 + 0.22 * len(layers)))
    axes = figure.add_subplot()
    names = [f"{x.node or x.tensor} ({x.op_type})" for x in layers]
    values = [x.sqnr_db for x in layers]
    colors = ["#c0392b" if v < 10 else "#e67e22" if v < 20 else "#2e86c1" for v in values]
    axes.barh(range(len(layers)), values, color=colors)
    axes.set_yticks(range(len(layers)), names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("SQNR vs float (dB, higher is better; red < 10, orange < 20)", fontsize=9)
    shown = f", worst {len(layers)} of {len(row.layers)}" if len(row.layers) > len(layers) else ""
    figure.suptitle(f"{run.label}: {row.name}, SQNR per tensor{shown}", fontsize=9)
    axes.grid(axis="x", alpha=0.3)
    return _png(figure, path)


def histogram_png(run: Run, row: FileRow, path: Path) -> Path | None:
    """Distribution of per-run latency of one benched file, p50 dashed."""
    import numpy as np

    if row.latency is None or not row.latency.timings_us:
        return None
    timings = np.asarray(row.latency.timings_us, dtype=float)
    p50, p90, p99 = np.percentile(timings, [50, 90, 99])
    # Up to p99 but no further than 3x the median, so a few stalls do not squeeze the body.
    low, high = float(timings.min()), float(max(min(p99, 3 * p50), p90))
    high = max(high, low * 1.01 + 1e-9)
    figure = _figure(6.4, 3.0)
    axes = figure.add_subplot()
    axes.hist(timings[timings <= high], bins=np.linspace(low, high, 40), color="#2e86c1")
    axes.axvline(p50, color="black", linestyle="--", linewidth=1, label=f"p50 {format_us(p50)}")
    axes.axvline(p99, color="#c0392b", linestyle=":", linewidth=1, label=f"p99 {format_us(p99)}")
    hidden = int((timings > high).sum())
    title = f"{run.label}: {row.name} ({row.latency.runtime}, {row.latency.threads} thread)"
    if hidden:
        title += f"; {hidden} of {timings.size} runs above {format_us(high)} not shown"
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("latency per run (µs)")
    axes.set_ylabel("runs")
    axes.legend(fontsize=8, loc="upper right")
    axes.grid(alpha=0.3)
    return _png(figure, path)
