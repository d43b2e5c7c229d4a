"""Latency statistics: the runner's summary as a typed value (tables format it: `report.tables`).

The numbers themselves come from `csideploy.runner.latency_summary` (numpy percentiles,
linear interpolation, over per-run `perf_counter_ns` timings), the one place they are
computed, whether the runner runs here, over ssh or under emulation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from csideploy.runner import latency_summary

__all__ = ["LatencyStats", "latency_summary", "summarize"]


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
