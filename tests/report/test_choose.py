"""Which file report.html says to ship."""

from __future__ import annotations

from pathlib import Path

from csideploy.report.choose import choose
from csideploy.report.load import FileRow, Gate, Latency, Run

PASS = (Gate("NMSE drop (dB)", 0.0, 0.3, True),)


def row(name: str, fmt: str, precision: str, size: int, p50: float, passed: bool = True) -> FileRow:
    gates = PASS if passed else (Gate("NMSE drop (dB)", 1.0, 0.3, False),)
    latency = Latency("export", "runtime", 1, 10, p50)
    return FileRow(name, fmt, "encoder", precision, bytes=size, gates=gates, latency=latency)


def test_a_smaller_int8_file_wins() -> None:
    run = Run(Path("x"), files=[
        row("encoder.tflite", "tflite", "fp32", 4_200_000, 320.0),
        row("encoder.int8.tflite", "tflite", "int8", 1_080_000, 300.0),
    ])
    assert choose(run).file == "encoder.int8.tflite"


def test_an_int8_file_no_smaller_than_float_loses_to_the_float_file() -> None:
    """The layer plan kept every layer float: the INT8 file is the float model by another name."""
    run = Run(Path("x"), files=[
        row("encoder.int8.tflite", "tflite", "int8", 4_211_656, 330.0),
        row("encoder.tflite", "tflite", "fp32", 4_211_656, 335.0),
        row("encoder.onnx", "onnx", "fp32", 4_205_263, 340.0),
    ])
    assert choose(run).file == "encoder.tflite"


def test_a_file_that_failed_a_gate_is_never_chosen() -> None:
    run = Run(Path("x"), files=[
        row("encoder.int8.tflite", "tflite", "int8", 1_000_000, 100.0, passed=False),
        row("encoder.tflite", "tflite", "fp32", 4_211_656, 335.0),
    ])
    choice = choose(run)
    assert choice.file == "encoder.tflite"
    assert "Failed a gate, not to be shipped: encoder.int8.tflite." in choice.reasons
