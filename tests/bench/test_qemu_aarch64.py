"""aarch64 correctness: the runner under qemu-user in an arm64 root gives the x86 outputs.

The root (Debian arm64 python3, aarch64 wheels of numpy, onnxruntime and ai-edge-litert) is
built by .ci/setup_arm64_root.sh. Timings under emulation are not latency: the document is
marked emulated and the report leaves them out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from csideploy.bench import BenchConfig, run_bench
from csideploy.bench.remote import RUNNER_PATH
from csideploy.report.render import render_report

FP32_TOLERANCE = 1e-4


def _output_step(path: Path) -> float:
    """The scale of the DequantizeLinear that produces a QDQ graph's output."""
    model = onnx.load(str(path))
    output = model.graph.output[0].name
    producer = next(n for n in model.graph.node if output in n.output)
    assert producer.op_type == "DequantizeLinear", producer.op_type
    initializers = {i.name: i for i in model.graph.initializer}
    return float(numpy_helper.to_array(initializers[producer.input[1]]))


def test_aarch64_outputs_match_x86(
    arm64_root: Path, workdir: Path, golden: Path, tmp_path: Path
) -> None:
    x86 = tmp_path / "x86"
    subprocess.run(
        [
            sys.executable,
            str(RUNNER_PATH),
            "--artifacts",
            str(workdir),
            "--runs",
            "1",
            "--warmup",
            "0",
            "--no-roofline",
            "--inputs",
            str(golden),
            "--save-outputs",
            str(x86),
        ],
        check=True,
        capture_output=True,
    )
    arm = tmp_path / "arm"
    config = BenchConfig(
        target=f"qemu:{arm64_root}", runs=2, warmup=0, inputs=golden, save_outputs=arm
    )
    result = run_bench(workdir, config)
    perf = result.perf
    assert perf["emulated"] is True and perf["emulation"] == "qemu-user"
    assert perf["machine"]["machine"] == "aarch64"
    assert "emulated" in perf["machine"]["cpu_model"]
    assert perf["roofline"] is None  # no micro-benchmark under emulation
    assert all(r["status"] == "ok" for r in perf["results"]), perf["results"]
    assert result.perf_path.name == "perf.emulated.json"
    assert not (workdir / "perf.json").exists()  # a real measurement is never replaced

    compared = []
    for name in ("encoder.onnx", "encoder.tflite"):
        a, b = np.load(x86 / f"{name}.npy"), np.load(arm / f"{name}.npy")
        assert a.shape == b.shape == (len(np.load(golden)), 32)
        assert np.abs(a - b).max() <= FP32_TOLERANCE, name
        compared.append(name)
    raw_x86 = np.load(x86 / "encoder.int8.tflite.raw.npy").astype(np.int32)
    raw_arm = np.load(arm / "encoder.int8.tflite.raw.npy").astype(np.int32)
    assert raw_x86.dtype == raw_arm.dtype and np.abs(raw_x86 - raw_arm).max() <= 1
    step = _output_step(workdir / "encoder.int8.onnx")
    a, b = np.load(x86 / "encoder.int8.onnx.npy"), np.load(arm / "encoder.int8.onnx.npy")
    assert np.abs(a - b).max() <= step * 1.001  # within one quantization step
    compared += ["encoder.int8.tflite", "encoder.int8.onnx"]
    assert len(compared) == 4

    files = render_report([workdir])
    report = files.markdown.read_text()
    assert "timings under emulation are not latency and are omitted" in report
    emulated_p50 = perf["results"][0]["latency_us"]["p50"]
    assert f"{emulated_p50:.0f} µs" not in report
    assert "| encoder.onnx | onnxruntime |" not in report  # no latency row at all
    assert json.loads(result.perf_path.read_text())["emulated"] is True


def test_qemu_target_needs_a_root(tmp_path: Path, workdir: Path) -> None:
    from csideploy.bench import RemoteError

    with pytest.raises(RemoteError, match="missing usr/bin/python3"):
        run_bench(workdir, BenchConfig(target=f"qemu:{tmp_path}"), write=False)
