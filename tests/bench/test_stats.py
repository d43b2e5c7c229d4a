"""Latency statistics and the roofline floor, against numpy and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from csideploy.bench.stats import LatencyStats, summarize
from csideploy.report.tables import format_bytes, format_us
from csideploy.runner import bandwidth_for, latency_floor, latency_summary


@pytest.mark.parametrize(
    "timings_ns",
    [
        [1000, 2000, 3000, 4000, 5000],
        [118_000] * 10 + [950_000],
        list(range(1000, 201_000, 1000)),
        np.random.default_rng(3).lognormal(11.5, 0.4, size=200).astype(np.int64).tolist(),
        [42_000],
    ],
    ids=["five", "outlier", "ramp", "lognormal", "single"],
)
def test_summary_matches_numpy(timings_ns: list[int]) -> None:
    us = np.asarray(timings_ns, dtype=np.float64) / 1e3
    summary = latency_summary(timings_ns)
    expected = dict(
        zip(("p50", "p90", "p99"), np.percentile(us, [50, 90, 99], method="linear"), strict=True)
    )
    expected |= {"min": us.min(), "max": us.max(), "mean": us.mean(), "std": us.std(ddof=0)}
    for key, value in expected.items():
        assert summary[key] == pytest.approx(value, abs=1e-3), key
    assert summary["runs"] == len(timings_ns)


def test_summary_known_values() -> None:
    # 1..10 us: linear percentiles p50 = 5.5, p90 = 9.1, p99 = 9.91.
    summary = summarize([k * 1000 for k in range(1, 11)])
    assert isinstance(summary, LatencyStats)
    assert (summary.p50, summary.p90, summary.p99) == (5.5, 9.1, 9.91)
    assert (summary.min, summary.max, summary.mean) == (1.0, 10.0, 5.5)
    assert summary.std == pytest.approx(2.8723, abs=1e-3)
    assert LatencyStats.from_dict(summary.as_dict()) == summary


def test_summary_rejects_empty() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        latency_summary([])


ROOF = {
    "peak_macs_per_s": 1e10,
    "bandwidth_bytes_per_s": 1e10,
    "bandwidth_by_size": {"65536": 4e10, "1048576": 3e10, "67108864": 1e10},
}


def test_floor_compute_bound() -> None:
    # 1e6 MACs at 1e10 MAC/s = 100 us; 1 KiB of weights at 4e10 B/s is far less.
    floor = latency_floor(1_000_000, 1024, ROOF)
    assert floor["bound"] == "compute"
    assert floor["floor_us"] == pytest.approx(100.0)
    assert floor["memory_us"] == pytest.approx(1024 / 4e10 * 1e6, rel=1e-3)


def test_floor_memory_bound_uses_bandwidth_at_the_weight_size() -> None:
    # 4 MiB of weights: only the 64 MiB copy (128 MiB touched) is at least that large.
    floor = latency_floor(1000, 4 * 2**20, ROOF)
    assert floor["bound"] == "memory"
    assert floor["floor_us"] == pytest.approx(4 * 2**20 / 1e10 * 1e6, rel=1e-4)
    assert bandwidth_for(2 * 2**20, ROOF) == 3e10  # the 1 MiB copy touches 2 MiB
    assert bandwidth_for(100_000, ROOF) == 4e10
    assert bandwidth_for(2**30, ROOF) == 1e10  # larger than any buffer: the DRAM figure


def test_floor_int8_and_batch() -> None:
    fp32 = latency_floor(1_000_000, None, ROOF, batch=4)
    int8 = latency_floor(1_000_000, None, ROOF, batch=4, precision="int8")
    assert fp32["floor_us"] == pytest.approx(400.0)
    assert int8["floor_us"] == pytest.approx(100.0)  # four 8-bit lanes per 32-bit lane


def test_floor_unknowns() -> None:
    assert latency_floor(None, None, ROOF) is None
    assert latency_floor(1000, 1000, None) is None
    assert latency_floor(1000, None, {"peak_macs_per_s": 1e9})["bound"] == "compute"


def test_formatting() -> None:
    assert format_us(None) == "-"
    assert format_us(42.25) == "42.2 µs"
    assert format_us(118.4) == "118 µs"
    assert format_us(1250.0) == "1.25 ms"
    assert format_bytes(82568) == "80.6 KiB"
    assert format_bytes(3 * 2**20) == "3.00 MiB"
    assert format_bytes(None) == "-"
