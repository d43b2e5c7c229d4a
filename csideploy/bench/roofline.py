"""Roofline floor: the least time a file could take on the measured machine.

``floor = max(batch * MACs / peak MAC rate, weight bytes / memory bandwidth)``. The peak and
bandwidth come from the runner's single-thread micro-benchmark (numpy float32 matmul, array
copies by size) on the machine that ran the files; `latency_floor` lives in the runner so a
remote or emulated run computes it the same way. The floor is a lower bound, not a
prediction: the ratio ``p50 / floor`` says how far a runtime is from the hardware limit.

MACs come from the manifest when it has them; otherwise `count_onnx_macs` counts them from
the ONNX graph (Conv, ConvTranspose, Gemm, MatMul and their integer forms, batch 1), which
also covers a `.tflite` file converted from the same encoder when it sits beside one.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from csideploy.runner import FLOOR_NOTE, bandwidth_for, latency_floor, roofline_probe

__all__ = [
    "FLOOR_NOTE",
    "bandwidth_for",
    "count_onnx_macs",
    "latency_floor",
    "roofline_probe",
]

_CONV = {"Conv", "ConvInteger", "QLinearConv"}
_MATMUL = {"MatMul", "MatMulInteger", "QLinearMatMul", "Gemm"}
# Position of the weight operand of each op (QLinear ops carry scale/zero-point operands).
_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
_INPUT_A = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0, "Gemm": 0}


def count_onnx_macs(path: str | os.PathLike[str]) -> int | None:
    """Multiply-accumulates of one batch-1 inference of an ONNX graph, or None if unknown.

    Shapes come from ONNX shape inference with every symbolic dimension taken as 1; a
    quantized (QDQ) graph counts the same as its float source. None when a counted node has
    a shape that inference could not resolve, or the file cannot be read.
    """
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception:  # an unreadable or unsupported file: MACs are simply unknown
        return None
    shapes = _shapes(model.graph)
    producers = {out: node for node in model.graph.node for out in node.output}
    total = 0
    for node in model.graph.node:
        if node.op_type in _CONV or node.op_type == "ConvTranspose":
            macs = _conv_macs(node, shapes, producers)
        elif node.op_type in _MATMUL:
            macs = _matmul_macs(node, shapes)
        else:
            continue
        if macs is None:
            return None
        total += macs
    return total


def _shapes(graph: Any) -> dict[str, tuple[int, ...]]:
    """Name -> concrete shape for initializers, inputs, outputs and inferred values."""
    shapes: dict[str, tuple[int, ...]] = {
        init.name: tuple(int(d) for d in init.dims) for init in graph.initializer
    }
    for value in (*graph.input, *graph.output, *graph.value_info):
        tensor = value.type.tensor_type
        if not tensor.HasField("shape"):
            continue
        dims = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim)
        shapes.setdefault(value.name, dims)
    return shapes


def _weight_shape(
    name: str, shapes: dict[str, tuple[int, ...]], producers: dict[str, Any]
) -> tuple[int, ...] | None:
    """The shape of a weight, looking through DequantizeLinear / Cast / Identity producers."""
    seen = 0
    while name not in shapes and name in producers and seen < 4:
        node = producers[name]
        if node.op_type not in ("DequantizeLinear", "Cast", "Identity", "QuantizeLinear"):
            return None
        name = node.input[0]
        seen += 1
    return shapes.get(name)


def _conv_macs(
    node: Any, shapes: dict[str, tuple[int, ...]], producers: dict[str, Any]
) -> int | None:
    weight = _weight_shape(node.input[_WEIGHT_INPUT[node.op_type]], shapes, producers)
    if weight is None or len(weight) < 3:
        return None
    kernel = math.prod(weight[2:])  # weight is (C_out, C_in / group, *kernel)
    if node.op_type == "ConvTranspose":
        x = shapes.get(node.input[0])
        # ConvTranspose weight is (C_in, C_out / group, *kernel): each input element fans out.
        return None if x is None else math.prod(x) * weight[1] * kernel
    y = shapes.get(node.output[0])
    return None if y is None else math.prod(y) * weight[1] * kernel


def _matmul_macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> int | None:
    a = shapes.get(node.input[_INPUT_A[node.op_type]])
    y = shapes.get(node.output[0])
    if a is None or y is None or not a:
        return None
    if node.op_type == "Gemm":
        trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
        inner = a[0] if trans_a else a[-1]
    else:
        inner = a[-1]
    return math.prod(y) * inner


def sibling_onnx(path: Path) -> Path | None:
    """The .onnx file a .tflite was most likely converted from (same directory and role)."""
    role = "decoder" if path.name.lower().startswith("decoder") else "encoder"
    candidates = sorted(path.parent.glob(f"{role}*.onnx"), key=lambda p: len(p.name))
    return candidates[0] if candidates else None
