"""INT8 / float latency of an export's encoders, repeated, with the spread.

On a shared CPU one interleaved measurement is not enough: this runs `--repeats` rounds of
`int8_peers.interleaved` (float and INT8 encoder of the same runtime in turn, one process,
1 thread, batch 1, median of `--runs` calls) and prints, per runtime, the median ratio over
the rounds and its range. Reads an output directory of `csideploy export --int8`; only
prints. `--profile` adds ONNX Runtime's own per-node kernel times (its profiler, medians over
the runs) for both ONNX files: how much of the encoder is the FC layer and how much the rest,
which bounds what quantizing the FC can give.

    csideploy export --model clnet --int8 --out /tmp/cr4
    python benchmarks/int8_ratio.py /tmp/cr4 --repeats 7 --profile
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from int8_peers import interleaved

from csideploy import runner
from csideploy.calibration import synthetic
from csideploy.formats.onnx import OnnxRunner

PAIRS = {
    "ONNX Runtime": ("encoder.onnx", "encoder.int8.onnx"),
    "LiteRT": ("encoder.tflite", "encoder.int8.tflite"),
}


def _calls(runtime: str, paths: tuple[Path, Path], x: np.ndarray) -> list:
    """One zero-argument call per file that encodes `x` once."""
    if runtime == "ONNX Runtime":
        runners = [OnnxRunner(p) for p in paths]
        return [lambda r=r: r.session.run(None, {r.input_name: x}) for r in runners]
    models = [runner.open_model("litert", p, 1, 1) for p in paths]
    return [lambda m=m: runner.run_rows(m, x) for m in models]


def profile(path: Path, x: np.ndarray, runs: int) -> None:
    """Print the median kernel time of each node of `path` (ONNX Runtime's profiler, 1
    thread), largest first, and their sum."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="int8-ratio-")) / "profile")
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(runs):
        session.run(None, {name: x})
    trace = Path(session.end_profiling())
    times = collections.defaultdict(list)
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[(event["args"]["op_name"], event["name"][: -len("_kernel_time")])].append(
                event["dur"]
            )
    trace.unlink()
    rows = sorted(((float(np.median(v)), k) for k, v in times.items()), reverse=True)
    print(f"{path.name}: sum of node medians {sum(r[0] for r in rows):.0f} us; largest:")
    for us, (op, node) in rows[:5]:
        print(f"  {us:6.0f} us  {op:12s} {node}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--profile", action="store_true")
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
    if args.profile:
        for name in PAIRS["ONNX Runtime"]:
            profile(args.export_dir / name, x, args.runs)


if __name__ == "__main__":
    main()
