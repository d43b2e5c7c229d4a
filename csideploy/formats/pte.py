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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from csideploy.errors import CsiDeployError, MissingDependencyError
from csideploy.formats.base import Format, register_format

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
    quantize: Callable[[Any, tuple[torch.Tensor, ...]], Any] | None = None,
) -> PteArtifact:
    """Export `module` (batch-1 input of `input_shape`) to `path` as an XNNPACK program.

    `precision` ("fp32", "int8" or "dynamic") is recorded; an INT8 file needs `quantize`, an INT8
    method's step (`csideploy.quantize.pte_pt2e`) that maps the exported program and an example
    input to the quantized program. The format itself converts float only.
    """
    if precision != "fp32" and quantize is None:
        raise CsiDeployError(f"{precision} .pte needs a quantizing step (csideploy.quantize)")
    version = executorch_version()
    example = (torch.zeros(1, *input_shape, dtype=torch.float32),)
    module = module.eval()
    with torch.no_grad():
        exported = torch.export.export(module, example, strict=False)
        if quantize is not None:
            exported = quantize(exported, example)
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
