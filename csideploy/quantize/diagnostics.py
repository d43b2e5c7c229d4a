"""Diagnostics of a quantized ONNX encoder: the ops left in float, and per-tensor SQNR.

`float_ops` lists the op types ONNX Runtime still runs in float in a quantized graph (the
report's "ops left in float" column and `numerics.json`'s `float_ops`); `layer_sqnr` ranks
tensors by how much quantization changed them (the table printed when the NMSE gate fails).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from csideploy.metrics import sqnr_db
from csideploy.quantize.calibration_data import CALIBRATION_BATCH, ArrayReader, quiet_quantizer


@dataclass(frozen=True)
class LayerError:
    """How far quantization moved one tensor: SQNR (dB, higher is better) against float.

    `sqnr_db` compares the tensor in the quantized graph with the same tensor in the float
    graph (error accumulated up to that point); `local_sqnr_db` compares the tensor before
    and after its own quantize / dequantize pair (the error that tensor adds), static only.
    """

    tensor: str
    node: str
    """The float graph's node that produces the tensor: `<module path>/<op type>`."""
    op_type: str
    sqnr_db: float
    local_sqnr_db: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



# Ops that only move or reshape data: they compute nothing, so "left in float" skips them.
DATA_MOVEMENT_OPS = frozenset(
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
            if op not in DATA_MOVEMENT_OPS:
                left.add(op)
    return tuple(sorted(left))


def layer_sqnr(
    float_path: str | os.PathLike[str],
    quantized_path: str | os.PathLike[str],
    samples: np.ndarray,
    *,
    workdir: str | os.PathLike[str],
    batch_size: int = CALIBRATION_BATCH,
) -> list[LayerError]:
    """SQNR of every tensor the quantized graph shares with the float graph, worst first.

    Uses `onnxruntime.quantization.qdq_loss_debug`: both graphs are augmented to output
    their intermediate tensors and run on `samples`; for a QDQ graph each quantized tensor is
    matched with its float twin and with its own pre-quantization value. Sorted by the SQNR
    that ranks the culprit: the local Q/DQ SQNR where known, else the SQNR against float.
    """
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    workdir = Path(workdir)
    float_aug = workdir / "debug.float.onnx"
    quant_aug = workdir / "debug.quantized.onnx"
    quantized = onnx.load(str(quantized_path))
    input_name = quantized.graph.input[0].name
    with quiet_quantizer():
        modify_model_output_intermediate_tensors(str(float_path), str(float_aug))
        modify_model_output_intermediate_tensors(str(quantized_path), str(quant_aug))
        reader = ArrayReader(input_name, samples, batch_size)
        float_acts = collect_activations(str(float_aug), reader)
        reader.rewind()
        quant_acts = collect_activations(str(quant_aug), reader)
    producer = {
        out: (node.name, node.op_type)
        for node in onnx.load(str(float_path)).graph.node
        for out in node.output
    }
    producer.update({i.name: ("graph input", "input") for i in quantized.graph.input})

    rows: dict[str, LayerError] = {}
    is_qdq = any(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    if is_qdq:
        matching = create_activation_matching(quant_acts, float_acts)
        matched = {name: m for name, m in matching.items() if m.get("float") is not None}
        errors = compute_activation_error(matched, err_func=sqnr_db)
        for name, error in errors.items():
            node, op_type = producer.get(name, ("?", "?"))
            rows[name] = LayerError(
                tensor=name,
                node=node,
                op_type=op_type,
                sqnr_db=_finite(error.get("xmodel_err", math.nan)),
                local_sqnr_db=_finite(error["qdq_err"]),
            )
    for name, values in quant_acts.items():
        if name in rows or name not in float_acts or name not in producer:
            continue
        node, op_type = producer[name]
        sqnr = _finite(sqnr_db(float_acts[name], values))
        rows[name] = LayerError(tensor=name, node=node, op_type=op_type, sqnr_db=sqnr)

    def rank(row: LayerError) -> float:
        return row.local_sqnr_db if row.local_sqnr_db is not None else row.sqnr_db

    return sorted(rows.values(), key=lambda row: (rank(row), row.sqnr_db, row.tensor))


def _finite(value: float) -> float:
    return round(float(value), 3) if math.isfinite(value) else float(value)


def int8_initializers(model: onnx.ModelProto) -> tuple[str, ...]:
    """Names of the weights stored as 8-bit integers (zero points and scales left out)."""
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    stored = {t.name for t in model.graph.initializer if t.data_type in eight_bit}
    weights = set()
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in stored:
            weights.add(node.input[0])
        elif node.op_type in ("MatMulInteger", "ConvInteger") and node.input[1] in stored:
            weights.add(node.input[1])
    return tuple(sorted(weights))
