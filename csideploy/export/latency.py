"""A quick latency line for the export report: onnxruntime, one thread, batch 1, p50.

This is a sanity figure measured where the export runs, not a benchmark of the handset; the
bench command measures properly (more runs, several runtimes, remote boards).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_RUNS = 200
DEFAULT_WARMUP = 20


@dataclass(frozen=True)
class LatencyResult:
    """Per-call latency of one artifact, in microseconds."""

    runtime: str
    threads: int
    batch: int
    runs: int
    warmup: int
    p50_us: float
    p90_us: float
    min_us: float

    def line(self) -> str:
        return (
            f"{self.runtime}, {self.threads} thread, batch {self.batch}: "
            f"p50 {self.p50_us:.1f} us, p90 {self.p90_us:.1f} us "
            f"({self.runs} runs after {self.warmup} warm-up)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def onnx_latency(
    path: str | os.PathLike[str],
    input_shape: Sequence[int],
    *,
    runs: int = DEFAULT_RUNS,
    warmup: int = DEFAULT_WARMUP,
    threads: int = 1,
) -> LatencyResult:
    """p50 / p90 of `session.run` on one fixed batch-1 input (shape without batch); further
    inputs (a decoder's side information) get random data of their declared shape."""
    import onnxruntime as ort

    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    first, *others = session.get_inputs()
    feed = {first.name: rng.random((1, *input_shape), dtype=np.float32)}
    for extra in others:
        feed[extra.name] = rng.random((1, *extra.shape[1:]), dtype=np.float32)
    for _ in range(warmup):
        session.run(None, feed)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times[i] = (time.perf_counter_ns() - start) / 1e3
    return LatencyResult(
        runtime=f"onnxruntime {ort.__version__}",
        threads=threads,
        batch=1,
        runs=runs,
        warmup=warmup,
        p50_us=round(float(np.percentile(times, 50)), 1),
        p90_us=round(float(np.percentile(times, 90)), 1),
        min_us=round(float(times.min()), 1),
    )
