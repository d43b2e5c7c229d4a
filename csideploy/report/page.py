"""report.html: one self-contained page (images inline, no script, no network) for a phone.

Order: what to ship and why, then per run the files table (size, latency, NMSE, gates), the
gates with their limits, ops left in float, the bench's latency table, then the plots. The
Content-Security-Policy allows nothing but inline styles and data: images, so the page
cannot reach the network. Each figure cell carries `data-key` and `data-value` (the raw
number), each row `data-file`.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from csideploy.report.choose import choose
from csideploy.report.load import Run
from csideploy.report.markdown import (
    LATENCY_HEADER,
    emulated_note,
    latency_rows,
    machine_line,
    roofline_line,
)
from csideploy.report.tables import (
    FILE_HEADER,
    FLOAT_HEADER,
    GATE_HEADER,
    Cell,
    extra_cells,
    file_cells,
    float_cells,
    gate_cells,
)

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 0.8em; max-width: 70em;
       color: #222; line-height: 1.4; }
h1 { font-size: 1.35em; } h2 { font-size: 1.15em; margin-top: 1.6em; } h3 { font-size: 1em; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; }
table { border-collapse: collapse; margin: 0.4em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
td[data-key="gate"], td[data-key="float_ops"] { text-align: left; white-space: normal; }
td.fail { color: #fff; background: #c0392b; font-weight: bold; }
.ship { border: 2px solid #1e8449; background: #eafaf1; padding: 0.6em 0.9em; border-radius: 6px; }
.ship.none { border-color: #c0392b; background: #fdedec; }
.ship b.file { font-size: 1.1em; }
img { max-width: 100%; height: auto; border: 1px solid #ddd; margin: 0.4em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def _attr(value: Any) -> str:
    """A cell's raw figure as an attribute value (JSON; inf as "inf")."""
    if isinstance(value, float) and not math.isfinite(value):
        value = None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return html.escape(json.dumps(value), quote=True)


def _cell(cell: Cell) -> str:
    attrs = f' data-key="{cell.key}" data-value="{_attr(cell.value)}"' if cell.key else ""
    css = f' class="{cell.css}"' if cell.css else ""
    return f"<td{attrs}{css}>{html.escape(cell.text)}</td>"


def table(header: Sequence[str], rows: Sequence[Sequence[Cell | str]], name: str = "") -> str:
    """A scrollable table; rows whose first cell names a file get `data-file`."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = [c if isinstance(c, Cell) else Cell(str(c)) for c in row]
        first = cells[0]
        data = f' data-file="{html.escape(str(first.value))}"' if first.key == "file" else ""
        body.append(f"<tr{data}>" + "".join(_cell(c) for c in cells) + "</tr>")
    label = f' data-table="{name}"' if name else ""
    return (
        f'<div class="scroll"><table{label}><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def image(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _ship(run: Run, several: bool) -> str:
    choice = choose(run)
    who = f"{html.escape(run.label)}: " if several else ""
    reasons = " ".join(html.escape(r) for r in choice.reasons)
    if choice.file is None:
        return f'<div class="ship none" data-ship=""><p>{who}nothing to ship: {reasons}</p></div>'
    return (
        f'<div class="ship" data-ship="{html.escape(choice.file)}"><p>{who}Ship '
        f'<b class="file">{html.escape(choice.file)}</b>.</p><p>{reasons}</p></div>'
    )


def _context(run: Run) -> str:
    """Evaluation set, NMSE convention and calibration, from numerics.json."""
    numerics = run.numerics or {}
    parts = []
    evaluation = numerics.get("evaluation") or {}
    convention = numerics.get("nmse_convention") or {}
    if evaluation:
        parts.append(
            f"NMSE on {evaluation.get('samples', '?')} samples of "
            f"{evaluation.get('source', '?')}, convention {convention.get('name', '?')} "
            f"({convention.get('description', '')}); lower is better."
        )
    if isinstance(numerics.get("float_nmse_db"), int | float):
        parts.append(f"Float model: {numerics['float_nmse_db']:.2f} dB.")
    calibration = numerics.get("calibration") or {}
    if calibration:
        parts.append(
            f"INT8 calibration: {calibration.get('samples', '?')} samples of "
            f"{calibration.get('source', '?')}, method {calibration.get('method', '?')}."
        )
    source = run.latency_source
    if source == "export":
        parts.append(
            "Latency: the export's quick check (batch 1, one thread, on the machine that ran "
            "the export); `csideploy bench` measures it properly."
        )
    elif source == "bench":
        parts.append("Latency: perf.json from `csideploy bench` (one thread, best runtime).")
    return f'<p class="note">{html.escape(" ".join(parts))}</p>' if parts else ""


def _run_sections(run: Run, several: bool) -> list[str]:
    prefix = f"{run.label}/" if several else ""
    parts = [f"<h2>{html.escape(run.label)}</h2>" if several else "<h2>Files</h2>"]
    parts.append(_context(run))
    files = [file_cells(run, row, prefix) for row in run.files]
    parts.append(table(FILE_HEADER, files, "files"))
    gates = [gate_cells(row, g, prefix) for row in run.files for g in row.gates]
    if gates:
        parts += ["<h3>Gates</h3>", table(GATE_HEADER, gates, "gates")]
    floats = [c for row in run.files if (c := float_cells(row, prefix))]
    if floats:
        parts += ["<h3>Ops left in float</h3>", table(FLOAT_HEADER, floats, "float_ops")]
    header, extra = extra_cells(run.files)
    if extra:
        parts += ["<h3>Other figures in numerics.json</h3>", table(header, extra, "extra")]
    if run.perf:
        settings = run.perf.get("settings", {})
        parts.append(
            f'<h3>Latency (csideploy bench)</h3><p class="note">Measured on '
            f"{html.escape(machine_line(run.perf))}; batch {settings.get('batch')}, "
            f"{settings.get('warmup')} warm-up and {settings.get('runs')} timed runs.</p>"
        )
        roof = roofline_line(run.perf)
        if roof:
            parts.append(f'<p class="note">{html.escape(roof)}</p>')
        parts.append(table(LATENCY_HEADER, latency_rows(run.perf, prefix), "bench"))
    if run.emulated:
        parts.append(f'<p class="note">{html.escape(emulated_note(run, prefix))}</p>')
    return parts


def page(runs: Sequence[Run], plots: Sequence[tuple[str, Path]]) -> str:
    """The whole document."""
    several = len(runs) > 1
    title = "csideploy report: " + ", ".join(run.label for run in runs)
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>What to ship</h2>"]
    parts += [_ship(run, several) for run in runs]
    for run in runs:
        parts += _run_sections(run, several)
    if plots:
        parts.append("<h2>Plots</h2>")
        parts += [image(png, alt) for alt, png in plots]
    problems = [p for run in runs for p in run.problems]
    if problems:
        parts.append(f'<p class="note">Notes: {html.escape("; ".join(problems))}</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(p for p in parts if p)
        + "\n</body></html>\n"
    )
