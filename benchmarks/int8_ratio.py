"""INT8 / float latency of an export's encoders, repeated, with the spread.

On a shared CPU one interleaved measurement is not enough: this runs `--repeats` rounds of
`int8_peers.interleaved` (float and INT8 encoder of the same runtime in turn, one process,
1 thread, batch 1, median of `--runs` calls) and prints, per runtime, the median ratio over
the rounds and its range. Reads an output directory of `csideploy export --int8`; only
prints.

    csideploy export --model clnet --int8 --out /tmp/cr4
    python benchmarks/int8_ratio.py /tmp/cr4 --repeats 7
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from int8_peers import interleaved

from csideploy.calibration import synthetic
from csideploy.export.litert_runner import LiteRTModel, encode_csi
from csideploy.export.onnx_export import OnnxRunner

PAIRS = {
    "ONNX Runtime": ("encoder.onnx", "encoder.int8.onnx"),
    "LiteRT": ("encoder.tflite", "encoder.int8.tflite"),
}


def _calls(runtime: str, paths: tuple[Path, Path], x: np.ndarray) -> list:
    """One zero-argument call per file that encodes `x` once."""
    if runtime == "ONNX Runtime":
        runners = [OnnxRunner(p) for p in paths]
        return [lambda r=r: r.session.run(None, {r.input_name: x}) for r in runners]
    models = [LiteRTModel(p) for p in paths]
    return [lambda m=m: encode_csi(m, x) for m in models]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    x = synthetic.default_evaluation(1)[:1]
    print(f"{args.export_dir}: {args.repeats} rounds of {args.runs} interleaved runs")
    print("| runtime | float us | int8 us | int8/fp32 | range | bytes fp32 -> int8 |")
    print("|---|---:|---:|---:|---:|---:|")
    for runtime, names in PAIRS.items():
        paths = tuple(args.export_dir / name for name in names)
        if not all(p.exists() for p in paths):
            continue
        calls = _calls(runtime, paths, x)
        rounds = np.array([interleaved(calls, args.runs) for _ in range(args.repeats)])
        ratios = rounds[:, 1] / rounds[:, 0]
        sizes = " -> ".join(f"{p.stat().st_size:,}" for p in paths)
        print(
            f"| {runtime} | {np.median(rounds[:, 0]):.0f} | {np.median(rounds[:, 1]):.0f} | "
            f"{np.median(ratios):.2f} | {ratios.min():.2f}-{ratios.max():.2f} | {sizes} |"
        )
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
