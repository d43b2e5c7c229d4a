"""Latency statistics: the runner's summary as a typed value, and formatting for tables.

The numbers themselves come from `csideploy.runner.latency_summary` (numpy percentiles,
linear interpolation, over per-run `perf_counter_ns` timings), the one place they are
computed, whether the runner runs here, over ssh or under emulation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from csideploy.runner import latency_summary

__all__ = ["LatencyStats", "format_bytes", "format_us", "latency_summary", "summarize"]


@dataclass(frozen=True)
class LatencyStats:
    """Per-run latency in microseconds: percentiles, extremes, mean, population std."""

    p50: float
    p90: float
    p99: float
    min: float
    max: float
    mean: float
    std: float
    runs: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyStats:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__})

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(timings_ns: Sequence[int]) -> LatencyStats:
    """`LatencyStats` of per-run timings given in nanoseconds."""
    return LatencyStats.from_dict(latency_summary(timings_ns))


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
