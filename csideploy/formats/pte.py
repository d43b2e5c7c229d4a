"""Encoders to ExecuTorch programs (`.pte`), lowered to the XNNPACK delegate.

fp32: `torch.export` -> `to_edge_transform_and_lower` with the XNNPACK partitioner ->
`to_executorch`. INT8: the PT2E flow with ExecuTorch's XNNPACK quantizer (int8 symmetric
per-channel weights, int8 affine activations) calibrated on the same CSI samples as the other
formats, then the same lowering. Static or dynamic activation quantization. What XNNPACK
cannot run (an integer codeword's rounding and casting) stays on ExecuTorch's portable CPU
kernels inside the same program.

`executorch` is an optional extra (`csideploy[executorch]`); nothing here imports it until an
export runs, and a missing install is a `MissingDependencyError` naming the extra.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.errors import MissingDependencyError
from csideploy.formats.base import Format, register_format

CALIBRATION_BATCH = 1
"""The program is exported for batch 1 (the handset call); calibration runs at that shape."""


@dataclass(frozen=True)
class PteArtifact:
    """A written `.pte` program and what the lowering did."""

    path: Path
    precision: str
    num_bytes: int
    sha256: str
    delegated_nodes: int
    portable_ops: tuple[str, ...]
    """Operators left outside the XNNPACK delegate (run by ExecuTorch's portable kernels)."""
    executorch: str


def executorch_version() -> str:
    """The installed executorch version, or MissingDependencyError naming the extra."""
    try:
        from importlib.metadata import version

        import executorch.exir  # noqa: F401

        return version("executorch")
    except Exception as error:  # a missing or broken install fails in many ways
        raise MissingDependencyError(
            "the pte format needs ExecuTorch: pip install 'csideploy[executorch]' "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
        ) from None


def export_pte(
    module: nn.Module,
    path: Path,
    *,
    input_shape: tuple[int, ...],
    precision: str = "fp32",
    calibration: np.ndarray | None = None,
    layers: Sequence[str] | None = None,
) -> PteArtifact:
    """Export `module` (batch-1 input of `input_shape`) to `path` as an XNNPACK program.

    `precision` is "fp32", "int8" (static, needs `calibration`) or "dynamic". `layers`: quantize
    only these modules (paths inside `module`, the export's layer plan), the rest float; an
    empty sequence quantizes nothing.
    """
    version = executorch_version()
    example = (torch.zeros(1, *input_shape, dtype=torch.float32),)
    module = module.eval()
    with torch.no_grad():
        exported = torch.export.export(module, example, strict=False)
        if precision != "fp32" and (layers is None or len(layers) > 0):
            exported = _quantized(exported, example, precision, calibration, layers)
        program, delegated, portable = _lower(exported)
    data = program.buffer
    path.write_bytes(data)
    return PteArtifact(
        path=path,
        precision=precision,
        num_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        delegated_nodes=delegated,
        portable_ops=portable,
        executorch=version,
    )


def _quantized(
    exported: Any,
    example: tuple[torch.Tensor, ...],
    precision: str,
    calibration: Any,
    layers: Sequence[str] | None = None,
) -> Any:
    """PT2E: annotate with the XNNPACK quantizer (only `layers` when given), calibrate,
    convert, re-export."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = precision == "dynamic"
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    )
    if layers is not None:
        from csideploy.quantize.tflite_pt2e import from_modules

        quantizer.set_filter_function(from_modules(tuple(layers)))
    prepared = prepare_pt2e(exported.module(), quantizer)
    if not dynamic:
        if calibration is None or len(calibration) == 0:
            raise ValueError("static INT8 needs calibration samples")
        data = torch.from_numpy(np.ascontiguousarray(calibration, dtype=np.float32))
        for start in range(0, len(data), CALIBRATION_BATCH):
            prepared(data[start : start + CALIBRATION_BATCH])
    else:
        prepared(*example)
    converted = convert_pt2e(prepared)
    return torch.export.export(converted, example, strict=False)


def _lower(exported: Any) -> tuple[Any, int, tuple[str, ...]]:
    """XNNPACK-delegate what it supports; count delegate calls and the ops left outside."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph
    delegated, portable = 0, set()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif name != "getitem":
            portable.add(name)
    return edge.to_executorch(), delegated, tuple(sorted(portable))


register_format(
    Format(
        name="pte",
        suffix=".pte",
        runtime="executorch",
        export=export_pte,
        int8=("int8", "dynamic"),
        extra="executorch",
    )
)
