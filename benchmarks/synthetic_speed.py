"""Throughput of the synthetic CSI generator (samples/s) for n = 20,000, indoor and outdoor.

Prints wall-clock samples/s with the default worker threads and with one thread, plus the
single-thread CPU-time rate (what one core delivers, unaffected by other processes), and the
rate of `write_synthetic_dataset` (generation streamed into the .mat files). Only
prints; asserts nothing. Run: `python benchmarks/synthetic_speed.py [--n N] [--repeat R]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from csideploy.calibration import synthetic
from csideploy.calibration.dataset_writer import write_synthetic_dataset

Timing = tuple[float, float]


def _time_once(n: int, scenario: str, workers: int | None) -> Timing:
    """(wall seconds, process CPU seconds) of one `generate` call."""
    wall, cpu = time.perf_counter(), time.process_time()
    synthetic.generate(n, scenario=scenario, seed=0, workers=workers)
    return time.perf_counter() - wall, time.process_time() - cpu


def _best(n: int, scenario: str, workers: int | None, repeat: int) -> Timing:
    """The fastest of `repeat` runs (least disturbed by other load), as (wall, cpu)."""
    runs = [_time_once(n, scenario, workers) for _ in range(repeat)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workers = synthetic._default_workers()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpus usable: {workers}, load average (1 min): {load:.2f}, n = {args.n}")
    for scenario in ("indoor", "outdoor"):
        synthetic.generate(16, scenario=scenario)  # warm-up: preset, caches
        wall, _ = _best(args.n, scenario, None, args.repeat)
        wall1, cpu1 = _best(args.n, scenario, 1, args.repeat)
        print(
            f"{scenario:8s} {args.n / wall:9.0f} samples/s wall ({workers} threads) | "
            f"{args.n / wall1:9.0f} samples/s wall (1 thread) | "
            f"{args.n / cpu1:9.0f} samples/s per CPU-second (1 thread)"
        )
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            write_synthetic_dataset(Path(tmp) / "d", scenario=scenario, n=args.n)
            written = args.n / (time.perf_counter() - start)
        print(f"{scenario:8s} {written:9.0f} samples/s wall written to .mat (streamed)")


if __name__ == "__main__":
    main()
