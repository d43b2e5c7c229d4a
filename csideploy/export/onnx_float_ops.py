"""Which ops ONNX Runtime still runs in float in a quantized graph (`float_ops`).

The report's "ops left in float" column and `numerics.json`'s `float_ops` come from here.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

# Ops that only move or reshape data: they compute nothing, so "left in float" skips them.
_DATA_MOVEMENT_OPS = frozenset(
    {
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Concat",
        "Identity",
        "Shape",
        "Gather",
        "Slice",
        "Split",
        "Cast",
        "Constant",
    }
)
# Integer kernels (besides the QLinear* family): int8 in, int8 / int32 out.
_INTEGER_OPS = frozenset({"MatMulInteger", "ConvInteger", "QGemm", "QAttention"})
# Integer kernels with float output: the dequantization is part of the kernel (MatMulNBits
# with 8-bit weights and accuracy_level 4 quantizes its float input per block itself).
_INTEGER_TO_FLOAT_OPS = frozenset({"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "MatMulNBits"})


def float_ops(path: str | os.PathLike[str], *, workdir: str | os.PathLike[str]) -> tuple[str, ...]:
    """Op types ONNX Runtime still computes in float when it runs the quantized graph, sorted.

    The graph is optimised the way the CPU session does it (extended level: Q/DQ pairs
    around an op fuse into its integer kernel, e.g. QLinearConv, QGemm, QLinearSigmoid;
    dynamic MatMulInteger chains into DynamicQuantizeMatMul), then float tensors are followed
    from the float input and every DequantizeLinear: an op that reads one is an op left in
    float. Ops that only move or reshape data are not listed.
    """
    import onnxruntime as ort

    optimized = Path(workdir) / "float-ops.optimized.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(optimized)
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return _float_compute_ops(onnx.load(str(optimized)))


def _float_compute_ops(model: onnx.ModelProto) -> tuple[str, ...]:
    graph = model.graph
    float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    floating = {v.name for v in graph.input if v.type.tensor_type.elem_type in float_types}
    floating |= {t.name for t in graph.initializer if t.data_type in float_types}
    constants = {t.name for t in graph.initializer}
    left = set()
    for node in graph.node:
        op = node.op_type
        if op in ("QuantizeLinear", "DynamicQuantizeLinear", "Shape", "Size"):
            continue
        if op == "DequantizeLinear" or op in _INTEGER_TO_FLOAT_OPS:
            floating.update(node.output)
            continue
        if op.startswith("QLinear") or op in _INTEGER_OPS:
            continue
        if op == "Cast":
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if to in float_types:
                floating.update(node.output)
            continue
        reads_float = any(n in floating and n not in constants for n in node.input if n)
        if reads_float:
            floating.update(node.output)
            if op not in _DATA_MOVEMENT_OPS:
                left.add(op)
    return tuple(sorted(left))
