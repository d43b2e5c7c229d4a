"""report.md's latency block: the bench's table and the block that only csideploy rewrites.

`report.md` may belong to another writer (the export recipe): this module only ever replaces
the block between ``<!-- csideploy:perf:begin -->`` and ``<!-- csideploy:perf:end -->``,
appending it when absent, and leaves the rest of the file as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from csideploy.fileio import write_atomic
from csideploy.report.load import Run, number
from csideploy.report.tables import format_bytes, format_us

BLOCK_BEGIN = "<!-- csideploy:perf:begin -->"
BLOCK_END = "<!-- csideploy:perf:end -->"


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table (pipes in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt_ms(value: Any) -> str:
    return f"{value:.1f} ms" if number(value) is not None else "-"


LATENCY_HEADER = (
    "artifact",
    "runtime",
    "threads",
    "p50",
    "p90",
    "p99",
    "mean ± std",
    "init",
    "first run",
    "peak RSS",
    "floor",
    "p50 / floor",
)


def latency_rows(perf: dict[str, Any], prefix: str = "") -> list[list[str]]:
    rows = []
    for record in perf.get("results", []):
        name = prefix + record["artifact"]
        latency = record.get("latency_us")
        if record.get("status") != "ok" or not latency:
            reason = record.get("reason") or record.get("status")
            rows.append(
                [name, record["runtime"], record["threads"], f"{record['status']}: {reason}"]
                + ["" for _ in LATENCY_HEADER[4:]]
            )
            continue
        floor = record.get("floor") or {}
        ratio = record.get("p50_over_floor")
        rows.append(
            [
                name,
                record["runtime"],
                record["threads"],
                format_us(latency["p50"]),
                format_us(latency["p90"]),
                format_us(latency["p99"]),
                f"{format_us(latency['mean'])} ± {format_us(latency['std'])}",
                _fmt_ms(record.get("init_ms")),
                _fmt_ms(record.get("first_inference_ms")),
                format_bytes(record.get("peak_rss_bytes")),
                f"{format_us(floor.get('floor_us'))} ({floor.get('bound')})" if floor else "-",
                f"{ratio:.1f}x" if number(ratio) is not None else "-",
            ]
        )
    return rows


def machine_line(perf: dict[str, Any]) -> str:
    machine = perf.get("machine") or {}
    target = perf.get("target")
    where = target.get("url") or target.get("kind") if isinstance(target, dict) else target
    runtimes = ", ".join(f"{k} {v}" for k, v in (machine.get("runtimes") or {}).items())
    return (
        f"{machine.get('cpu_model', 'unknown CPU')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('machine', '?')}, Python {machine.get('python', '?')}, "
        f"numpy {machine.get('numpy', '?')}"
        + (f", {runtimes}" if runtimes else "")
        + (f" (target: {where})" if where and where != "local" else "")
    )


def roofline_line(perf: dict[str, Any]) -> str | None:
    roof = perf.get("roofline")
    if not roof:
        return None
    return (
        f"Roofline of this machine (one thread): peak {roof['peak_macs_per_s'] / 1e9:.1f} GMAC/s "
        f"(float32 matmul), memory bandwidth {roof['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s "
        f"(64 MiB copy). The floor is max(MACs / peak, weight bytes / bandwidth): a lower "
        "bound on latency, not a prediction; INT8 files use four times the float32 peak."
    )


def latency_markdown(runs: Sequence[Run]) -> str:
    """The ``## Latency`` section: machine, roofline and the latency table of every run."""
    several = len(runs) > 1
    parts = ["## Latency", ""]
    measured = False
    for run in runs:
        prefix = f"{run.label}/" if several else ""
        if run.perf:
            measured = True
            settings = run.perf.get("settings", {})
            parts += [
                f"Measured on {machine_line(run.perf)}; batch {settings.get('batch')}, "
                f"{settings.get('warmup')} warm-up and {settings.get('runs')} timed runs "
                f"({run.perf.get('created', '')}).",
                "",
            ]
            roof = roofline_line(run.perf)
            if roof:
                parts += [roof, ""]
            parts += [md_table(LATENCY_HEADER, latency_rows(run.perf, prefix)), ""]
        if run.emulated:
            parts += [emulated_note(run, prefix), ""]
    if not measured and not any(r.emulated for r in runs):
        parts += ["No latency measured yet: run `csideploy bench DIR`.", ""]
    return "\n".join(parts).rstrip() + "\n"


def emulated_note(run: Run, prefix: str) -> str:
    perf = run.emulated or {}
    ok = [r for r in perf.get("results", []) if r.get("status") == "ok"]
    machine = (perf.get("machine") or {}).get("machine", "?")
    names = ", ".join(sorted({prefix + r["artifact"] for r in ok})) or "none"
    return (
        f"Emulated run ({machine}, {perf.get('emulation') or 'emulated'}): the files loaded and "
        f"ran ({names}); timings under emulation are not latency and are omitted."
    )


# --------------------------------------------------------------------------- markdown block


def replace_block(text: str, body: str) -> str:
    """`text` with the csideploy perf block replaced by `body` (appended when absent)."""
    block = f"{BLOCK_BEGIN}\n{body.rstrip()}\n{BLOCK_END}\n"
    start = text.find(BLOCK_BEGIN)
    end = text.find(BLOCK_END, start + 1) if start >= 0 else -1
    if start >= 0 and end >= 0:
        return text[:start] + block + text[end + len(BLOCK_END) :].lstrip("\n")
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text else "") + block


def update_report_md(path: Path, body: str) -> Path:
    """Replace (or append) the perf block of `path`, leaving the rest of the file alone."""
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    write_atomic(path, replace_block(existing, body))
    return path


def write_latency_section(directory: str | os.PathLike[str], perf: dict[str, Any]) -> Path:
    """The ``## Latency`` block of `directory/report.md` from one perf document."""
    folder = Path(directory)
    run = Run(folder)
    if perf.get("emulated"):
        run.emulated = perf
    else:
        run.perf = perf
    return update_report_md(folder / "report.md", latency_markdown([run]))
