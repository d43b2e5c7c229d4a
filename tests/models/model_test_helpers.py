"""Helpers shared by the model tests."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch


def onnx_run(module: torch.nn.Module, x: torch.Tensor, path: Path) -> list[np.ndarray]:
    """Export `module` to ONNX at `path` (dynamic batch) and run it on `x` with ONNX Runtime."""
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (x,),
            dynamo=True,
            external_data=False,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})
