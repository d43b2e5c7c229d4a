"""Which file a handset team should ship, and the reasons, in words.

Only UE encoder files that passed every gate qualify, and a file more than `SLOWER` times
the fastest qualifying file's p50 latency drops out. Among the rest the smallest file wins;
files within `SAME_SIZE` of the smallest count as equally small, and among those TFLite (the
handset runtime) comes first, then the lower latency. Latency here is measured on the
machine that ran the export or the bench, not on the handset, and moves from run to run on a
shared machine, which is why it only rules out clearly slower files.
"""

from __future__ import annotations

from dataclasses import dataclass

from csideploy.report.load import FileRow, Run
from csideploy.report.tables import fmt_bytes, fmt_db, fmt_us

SLOWER = 2.0
SAME_SIZE = 1.05


@dataclass(frozen=True)
class Choice:
    """The recommendation for one run: the file (or None) and why, sentence by sentence."""

    file: str | None
    reasons: tuple[str, ...]


def choose(run: Run) -> Choice:
    """Pick the file to ship from one run."""
    encoders = [row for row in run.files if row.role == "encoder"]
    qualified = [row for row in encoders if row.passed is not False]
    failed = [row.name for row in encoders if row.passed is False]
    if not qualified:
        reason = "no UE encoder file passed its gates" if encoders else "no UE encoder file"
        return Choice(None, (reason + ".",))
    timed = [row.latency.p50_us for row in qualified if row.latency]
    fastest = min(timed) if timed else None
    band = [
        row
        for row in qualified
        if fastest is None or row.latency is None or row.latency.p50_us <= SLOWER * fastest
    ]
    smallest = min(row.bytes or 0 for row in band)

    def rank(row: FileRow) -> tuple[int, bool, bool, float, str]:
        # at the same size a float file wins: an INT8 file that is no smaller kept its
        # layers in float (the layer plan) and adds nothing but a name
        size = 0 if (row.bytes or 0) <= SAME_SIZE * smallest else row.bytes or 0
        p50 = row.latency.p50_us if row.latency else float("inf")
        return size, row.format != "tflite", row.precision != "fp32", p50, row.name

    best = min(band, key=rank)
    return Choice(best.name, _reasons(best, qualified, fastest, failed))


def _reasons(
    best: FileRow, qualified: list[FileRow], fastest: float | None, failed: list[str]
) -> tuple[str, ...]:
    reasons = []
    gates = f"passed its {len(best.gates)} gate(s)" if best.gates else "has no gate recorded"
    delta = fmt_db(best.delta_nmse_db, signed=True, digits=3)
    reasons.append(f"{best.name} {gates}; NMSE {fmt_db(best.nmse_db)} (ΔNMSE {delta}).")
    floats = [r for r in qualified if r.precision == "fp32" and r.bytes]
    if best.bytes and floats and best.precision != "fp32":
        ratio = max(r.bytes for r in floats if r.bytes) / best.bytes
        reasons.append(f"It is {fmt_bytes(best.bytes)}, {ratio:.1f}x smaller than the float file.")
    elif best.bytes:
        reasons.append(f"It is the smallest qualifying file: {fmt_bytes(best.bytes)}.")
    if best.latency and fastest:
        ratio = best.latency.p50_us / fastest
        where = "csideploy bench" if best.latency.source == "bench" else "the export's check"
        pace = "the fastest" if ratio <= 1.0001 else f"{ratio:.2f}x the fastest"
        reasons.append(
            f"p50 {fmt_us(best.latency.p50_us)} ({where}, {best.latency.runtime}), {pace} "
            "on this machine; a handset's own figure needs `csideploy bench --target`."
        )
    if best.format == "tflite":
        reasons.append("TFLite runs on Android handsets through LiteRT.")
    if failed:
        reasons.append("Failed a gate, not to be shipped: " + ", ".join(failed) + ".")
    return tuple(reasons)
