"""Real artifact directories for the bench and report tests, built once per test session.

A CLNet CR 1/64 encoder (the smallest zoo encoder) as fp32 ONNX, static-QDQ INT8 ONNX,
fp32 TFLite and full-integer TFLite (int8 I/O), with its decoder as ONNX, a manifest, and a
small golden input array. Loaded by path from the conftests of tests/bench and tests/report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

MODEL, CR = "clnet", 64
GOLDEN_SAMPLES = 8
READY = ".complete"

PERF_SCHEMA = {
    "type": "object",
    "required": [
        "schema",
        "created",
        "emulated",
        "machine",
        "target",
        "settings",
        "roofline",
        "artifacts",
        "results",
    ],
    "properties": {
        "schema": {"const": "csideploy.perf/1"},
        "emulated": {"type": "boolean"},
        "machine": {
            "type": "object",
            "required": ["cpu_model", "cores", "machine", "python", "numpy", "runtimes"],
            "properties": {
                "cpu_model": {"type": "string", "minLength": 1},
                "cores": {"type": "integer", "minimum": 1},
                "machine": {"type": "string", "minLength": 1},
                "runtimes": {"type": "object"},
            },
        },
        "settings": {
            "type": "object",
            "required": ["threads", "batch", "warmup", "runs"],
        },
        "roofline": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["peak_macs_per_s", "bandwidth_bytes_per_s", "note"],
                    "properties": {
                        "peak_macs_per_s": {"type": "number", "exclusiveMinimum": 0},
                        "bandwidth_bytes_per_s": {"type": "number", "exclusiveMinimum": 0},
                    },
                },
            ]
        },
        "artifacts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "format", "role", "precision", "bytes", "params", "macs"],
                "properties": {
                    "format": {"enum": ["onnx", "tflite", "torch"]},
                    "role": {"enum": ["encoder", "decoder"]},
                    "bytes": {"type": ["integer", "null"]},
                    "gzip_bytes": {"type": ["integer", "null"]},
                    "params": {"type": ["integer", "null"]},
                    "macs": {"type": ["integer", "null"]},
                },
            },
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["artifact", "runtime", "threads", "batch", "status", "reason"],
                "properties": {
                    "status": {"enum": ["ok", "skipped", "error"]},
                    "threads": {"type": "integer", "minimum": 1},
                },
                "if": {"properties": {"status": {"const": "ok"}}},
                "then": {
                    "required": [
                        "latency_us",
                        "init_ms",
                        "first_inference_ms",
                        "peak_rss_bytes",
                        "input",
                        "output",
                    ],
                    "properties": {
                        "latency_us": {
                            "type": "object",
                            "required": ["p50", "p90", "p99", "min", "max", "mean", "std", "runs"],
                        }
                    },
                },
            },
        },
    },
}


def _calibration(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 2, 32, 32), dtype=np.float32)


def _export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: batch},),
        verbose=False,
    )


def _quantize_static(source: Path, target: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            import onnxruntime

            name = onnxruntime.InferenceSession(str(source)).get_inputs()[0].name
            self._items = iter([{name: calibration[i : i + 1]} for i in range(len(calibration))])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._items, None)

    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        # 7-bit weights: x86 AVX2 without VNNI saturates 8-bit products in onnxruntime's
        # fused int8 kernels (up to 14 output steps off the QDQ reference here), while aarch64
        # is exact; reduce_range makes both exact (docs/benchmarks.md).
        reduce_range=True,
    )


def build_artifacts(base: Path) -> Path:
    """The artifact directory under `base`, built on the first call of the session."""
    folder = base / f"{MODEL}-cr{CR}"
    if (folder / READY).is_file():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    from csideploy.models import build

    torch.manual_seed(0)
    model = build(MODEL, CR)
    example = torch.rand(1, 2, 32, 32)
    calibration = _calibration(32, seed=1)
    _export_onnx(model.encoder, example, folder / "encoder.onnx")
    _export_onnx(model.decoder, model.encoder(example).detach(), folder / "decoder.onnx")
    _quantize_static(folder / "encoder.onnx", folder / "encoder.int8.onnx", calibration)

    import litert_torch

    litert_torch.convert(model.encoder, (example,)).export(str(folder / "encoder.tflite"))
    from csideploy.quantize.tflite_pt2e import pt2e_export_tflite

    pt2e_export_tflite(
        model.encoder,
        folder / "encoder.int8.tflite",
        precision="int8",
        calibration=calibration,
        io="int8",
    )
    manifest = {  # the keys of the bundle schema that the runner reads; not a whole bundle
        "artifact_version": 1,
        "model": {"name": MODEL, "cr": CR, "codeword_length": model.codeword_length},
        "artifacts": [
            {"file": name, "precision": precision}
            for name, precision in (
                ("encoder.onnx", "fp32"),
                ("encoder.int8.onnx", "int8"),
                ("encoder.tflite", "fp32"),
                ("encoder.int8.tflite", "int8"),
            )
        ],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    np.save(folder.parent / "golden.npy", _calibration(GOLDEN_SAMPLES, seed=7))
    (folder / READY).write_text("ok")
    return folder


def copy_without_marker(source: Path, target: Path) -> Path:
    """A private copy of an artifact directory that a test may write into."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(READY))
    return target
