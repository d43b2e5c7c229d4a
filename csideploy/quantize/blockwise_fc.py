"""FC layers with int8 weights and int8 activations quantized per block at run time (ONNX).

A static per-tensor int8 grid on the input of a trained encoder's large FC layer is too
coarse: the 2048 inputs of CLNet CR 1/4's FC span 0.03 to 10 (max |x| per feature), so one
scale rounds most features to a few steps. Measured on the shipped CLNet CR 1/4 (1000
synthetic indoor samples, docs/int8.md): static per-tensor +0.113 dB NMSE, ONNX Runtime's
dynamic per-tensor form (`DynamicQuantizeLinear` + `MatMulInteger`) +0.105 dB, both over the
plan's 0.05 dB budget. ONNX Runtime's `MatMulNBits` with 8-bit weights and
`accuracy_level=4` quantizes the input to int8 per block of `BLOCK_SIZE` input features, per
sample, and runs an int8 dot product with one float scale per block: +0.005 dB at block 32
(+0.015 dB at 128), and as fast as the dynamic per-tensor form on an AVX2 CPU.

`to_blockwise` rewrites the chosen `Gemm` nodes of a graph into `MatMulNBits` (weights
quantized symmetric per block by onnxruntime's own quantizer) followed by a float `Add` of
the bias; the layer's output stays float. `MatMulNBits` is an ONNX Runtime contrib op
(domain com.microsoft): the file runs on ONNX Runtime, not on other ONNX back ends.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

BLOCK_SIZE = 32
"""Input features per activation / weight scale (see the module docstring for the measure)."""
ACCURACY_LEVEL = 4
"""MatMulNBits compute type: 4 = int8 activations (int8 dot products), per block."""
PRECISION = "dynamic"
"""The plan's name for this per-layer precision (int8 weights, run-time int8 activations)."""


def supports(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """True for a plain FC `Gemm` (constant 2-D weight, at least one block of inputs, no
    transposed input, unit alpha and beta)."""
    if node.op_type != "Gemm":
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        return False
    weight = _initializer(model, node.input[1])
    if weight is None or len(weight.dims) != 2:
        return False
    inputs = weight.dims[1] if attrs.get("transB", 0) else weight.dims[0]
    return inputs >= BLOCK_SIZE


def to_blockwise(
    model: onnx.ModelProto, nodes: Sequence[str], *, block_size: int = BLOCK_SIZE
) -> onnx.ModelProto:
    """A copy of `model` with each `Gemm` named in `nodes` as MatMulNBits (+ Add for the
    bias); `block_size` other than the default only for measurements."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    work = onnx.ModelProto()
    work.CopyFrom(model)
    matmuls = [split_gemm(work, name) for name in nodes]
    if not matmuls:
        return work
    quantizer = MatMulNBitsQuantizer(
        work,
        bits=8,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=ACCURACY_LEVEL,
        nodes_to_include=matmuls,
        op_types_to_quantize=("None",),
    )
    with _quiet():
        quantizer.process()
    result = quantizer.model.model
    _drop_unused(result.graph)
    return result


def blockwise_weights(model: onnx.ModelProto) -> tuple[str, ...]:
    """Names of the 8-bit weights of the graph's MatMulNBits layers."""
    return tuple(sorted(n.input[1] for n in model.graph.node if n.op_type == "MatMulNBits"))


def split_gemm(model: onnx.ModelProto, name: str) -> str:
    """Replace Gemm `name` by MatMul (weight as (K, M)) + Add (float, in place); returns the
    MatMul's name."""
    graph = model.graph
    index, node = next((i, n) for i, n in enumerate(graph.node) if n.name == name)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = numpy_helper.to_array(_initializer(model, node.input[1]))
    if attrs.get("transB", 0):
        weight = weight.T
    weight_name = f"{node.input[1]}.kxm"
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
    matmul_name = name.rsplit("/", 1)[0] + "/MatMul"
    has_bias = len(node.input) > 2 and node.input[2] != ""
    product = f"{node.output[0]}.matmul" if has_bias else node.output[0]
    new = [helper.make_node("MatMul", [node.input[0], weight_name], [product], name=matmul_name)]
    if has_bias:
        new.append(
            helper.make_node(
                "Add",
                [product, node.input[2]],
                [node.output[0]],
                name=name.rsplit("/", 1)[0] + "/Add",
            )
        )
    graph.node.remove(node)
    for offset, added in enumerate(new):
        graph.node.insert(index + offset, added)
    _drop_unused(graph)
    return matmul_name


def _initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto | None:
    return next((t for t in model.graph.initializer if t.name == name), None)


def _drop_unused(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """onnxruntime's weight quantizer logs one line per node at INFO level."""
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
