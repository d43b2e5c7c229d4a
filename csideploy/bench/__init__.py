"""Latency and size of encoder artifacts on mobile-class CPUs.

`run_bench` measures every file of an artifact directory with the standalone runner
(`runner.py`, which needs only numpy and one runtime) here, on an ssh target or under qemu,
and writes `perf.json` and the latency section of `report.md`.
"""

from csideploy.bench.measure import BenchConfig, BenchResult, run_bench, target_kind
from csideploy.bench.remote import RUNNER_PATH, RemoteError
from csideploy.bench.ssh import SshTarget
from csideploy.bench.stats import LatencyStats, summarize

__all__ = [
    "RUNNER_PATH",
    "BenchConfig",
    "BenchResult",
    "LatencyStats",
    "RemoteError",
    "SshTarget",
    "run_bench",
    "summarize",
    "target_kind",
]
