"""Running one artifact on golden inputs in its own runtime, one sample at a time.

Shared by the bundle writer (which records the expected outputs) and `verify` (which
recomputes them), so both run a file the same way: the standalone runner's model wrappers,
its input quantization and its output dequantization.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csideploy import runner

RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert", "pte": "executorch"}


def open_artifact(runtime: str, path: Path) -> Any:
    """The runner's model wrapper for `path` (one thread, batch 1)."""
    return runner.open_model(runtime, path, threads=1, batch=1)


def run_artifact(
    runtime: str, path: Path, inputs: np.ndarray, output_names: Sequence[str] | None = None
) -> np.ndarray:
    """Float outputs of one artifact on `inputs`: every output as float (dequantized where
    the file quantizes it), flattened per sample and concatenated in `output_names` order (the
    file's order when not given)."""
    outputs = run_artifact_outputs(runtime, path, inputs, output_names)
    return np.concatenate([y.reshape(len(y), -1) for y in outputs], axis=1).astype(np.float32)


def run_artifact_outputs(
    runtime: str, path: Path, inputs: np.ndarray, output_names: Sequence[str] | None = None
) -> list[np.ndarray]:
    """Each output of one artifact on `inputs`, one sample at a time (fixed-batch safe)."""
    return run_model_outputs(open_artifact(runtime, path), inputs, output_names, path)


def run_model_outputs(
    model: Any, inputs: np.ndarray, output_names: Sequence[str] | None, path: Path
) -> list[np.ndarray]:
    """Each output of an opened model on `inputs`, in `output_names` order: float where the
    file quantizes it, integer levels where the file returns them unscaled."""
    order = _output_order(model.outputs, output_names, path)
    raw = runner.run_rows(model, inputs)
    return [np.asarray(runner.as_float_output(raw[k], model.outputs[k])) for k in order]


def _output_order(
    specs: Sequence[dict[str, Any]], names: Sequence[str] | None, path: Path
) -> list[int]:
    if not names:
        return list(range(len(specs)))
    found = [s["name"] for s in specs]
    missing = [n for n in names if n not in found]
    if missing or len(names) != len(found):
        raise runner.Skip(f"{path.name} has outputs {found}, the manifest lists {list(names)}")
    return [found.index(n) for n in names]
