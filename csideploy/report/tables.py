"""The report's tables as cells: display text plus the raw figure it rounds.

Every cell keeps the number it shows (`Cell.value`), so the HTML carries it in `data-value`
and a reader (or a test) can check the page against numerics.json and perf.json. Rounding
follows what the figure can carry: NMSE to 0.01 dB, ΔNMSE to 0.001 dB, errors to two
significant digits, latency to the microsecond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from csideploy.report.load import FileRow, Gate, Run


@dataclass(frozen=True)
class Cell:
    """One table cell: what is shown, and the figure behind it (key names the figure)."""

    text: str
    key: str = ""
    value: Any = None
    css: str = ""


def fmt_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    if value >= 1 << 20:
        return f"{value:,} B ({value / (1 << 20):.2f} MiB)"
    return f"{value:,} B ({value / 1024:.1f} KiB)" if value >= 1024 else f"{value:,} B"


def format_us(value: float | None) -> str:
    """A latency for a table: '118 µs', '1.25 ms', '-' when unknown."""
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    if value >= 100:
        return f"{value:.0f} µs"
    return f"{value:.1f} µs"


def format_bytes(value: int | None) -> str:
    """A size for a table in binary units: '82.6 KiB', '1.20 MiB'."""
    if value is None:
        return "-"
    if value >= 2**20:
        return f"{value / 2**20:.2f} MiB"
    if value >= 2**10:
        return f"{value / 2**10:.1f} KiB"
    return f"{value} B"


def fmt_count(value: int | None) -> str:
    """Params and MACs: exact, with a short form for large numbers."""
    if value is None:
        return "-"
    if value >= 1_000_000:
        return f"{value:,} ({value / 1e6:.2f} M)"
    return f"{value:,}"


def fmt_us(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f} µs" if value >= 100 else f"{value:.1f} µs"


def fmt_db(value: float | None, *, signed: bool = False, digits: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return f"{text} dB"


def fmt_error(value: float | None) -> str:
    """An absolute error, two significant digits."""
    if value is None:
        return "-"
    return f"{value:.2g}" if value >= 1e-3 or value == 0 else f"{value:.1e}"


def fmt_measure(value: float, name: str) -> str:
    """A gate's measured value or limit, in the gate's own unit."""
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "none" if value > 0 else "-inf"
    if "db" in name.lower():
        return f"{value:+.3f} dB" if abs(value) < 100 else f"{value:.1f} dB"
    if "%" in name or "fraction" in name.lower() or "level" in name.lower():
        return f"{value:.3g}"
    return fmt_error(abs(value)) if value >= 0 else f"-{fmt_error(-value)}"


FILE_HEADER = (
    "file",
    "side",
    "precision",
    "size",
    "params",
    "MACs",
    "latency p50",
    "NMSE",
    "ΔNMSE vs float",
    "max-abs error",
    "gates",
)


def file_cells(run: Run, row: FileRow, prefix: str = "") -> list[Cell]:
    """One row of the files table."""
    latency = row.latency
    where = f" ({latency.source}, {latency.runtime})" if latency else ""
    compared = f" ({row.compared_output})" if row.compared_output else ""
    verdict = {None: "-", True: "passed", False: "FAILED"}[row.passed]
    return [
        Cell(prefix + row.name, "file", row.name),
        Cell(row.side),
        Cell(row.precision or "-", "precision", row.precision),
        Cell(fmt_bytes(row.bytes), "bytes", row.bytes),
        Cell(fmt_count(row.params), "params", row.params),
        Cell(fmt_count(row.macs), "macs", row.macs),
        Cell(
            fmt_us(latency.p50_us if latency else None) + where,
            "p50_us",
            latency.p50_us if latency else None,
        ),
        Cell(fmt_db(row.nmse_db), "nmse_db", row.nmse_db),
        Cell(fmt_db(row.delta_nmse_db, signed=True, digits=3), "delta_nmse_db", row.delta_nmse_db),
        Cell(fmt_error(row.max_abs_error) + compared, "max_abs_error", row.max_abs_error),
        Cell(verdict, "passed", row.passed, "fail" if row.passed is False else ""),
    ]


GATE_HEADER = ("file", "gate", "measured", "limit", "result")


def gate_cells(row: FileRow, gate: Gate, prefix: str = "") -> list[Cell]:
    return [
        Cell(prefix + row.name, "file", row.name),
        Cell(gate.name, "gate", gate.name),
        Cell(fmt_measure(gate.measured, gate.name), "measured", gate.measured),
        Cell(fmt_measure(gate.limit, gate.name), "limit", gate.limit),
        Cell(
            "passed" if gate.passed else "FAILED",
            "gate_passed",
            gate.passed,
            "" if gate.passed else "fail",
        ),
    ]


FLOAT_HEADER = ("file", "ops left in float")


def float_cells(row: FileRow, prefix: str = "") -> list[Cell] | None:
    """Quantized files only: the op types the runtime still runs in float."""
    if row.precision == "fp32" or row.float_ops is None:
        return None
    ops = ", ".join(row.float_ops) if row.float_ops else "none: every op runs in integer"
    return [Cell(prefix + row.name, "file", row.name), Cell(ops, "float_ops", list(row.float_ops))]


def extra_cells(rows: Sequence[FileRow]) -> tuple[list[str], list[list[Cell]]]:
    """Figures numerics.json records beyond the known ones, one column per key."""
    keys = list(dict.fromkeys(k for row in rows for k in row.extra))
    if not keys:
        return [], []
    table = []
    for row in rows:
        cells = [Cell(row.name, "file", row.name)]
        for key in keys:
            value = row.extra.get(key)
            text = (
                "-"
                if value is None
                else fmt_error(value)
                if isinstance(value, float)
                else str(value)
            )
            cells.append(Cell(text, key, value))
        table.append(cells)
    return ["file", *keys], table
