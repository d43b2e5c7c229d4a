"""The blockwise int8 FC form (MatMulNBits, 8-bit weights, per-block int8 activations) on
real ONNX graphs run by ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from csideploy.quantize import blockwise_fc


def _gemm_model(inputs: int = 256, outputs: int = 64, *, trans_a: int = 0) -> onnx.ModelProto:
    """x (N, inputs) -> Gemm(transB=1) with a bias -> y (N, outputs)."""
    rng = np.random.default_rng(0)
    weight = (rng.normal(size=(outputs, inputs)) / np.sqrt(inputs)).astype(np.float32)
    bias = rng.normal(size=outputs).astype(np.float32)
    node = helper.make_node(
        "Gemm", ["x", "w", "b"], ["y"], name="fc/Gemm", transB=1, transA=trans_a
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, outputs])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_a_gemm_becomes_matmulnbits_with_a_float_bias_and_stays_close_to_float():
    model = _gemm_model()
    # Inputs whose ranges differ by orders of magnitude, like a CSI encoder's FC input.
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(32, 256)) * np.logspace(-2, 1, 256)).astype(np.float32)
    converted = blockwise_fc.to_blockwise(model, ["fc/Gemm"])
    ops = [n.op_type for n in converted.graph.node]
    assert ops == ["MatMulNBits", "Add"]
    assert blockwise_fc.blockwise_weights(converted) != ()
    reference, result = _run(model, x), _run(converted, x)
    sqnr = 10 * np.log10(np.sum(reference**2) / np.sum((reference - result) ** 2))
    assert 30.0 < sqnr < 90.0  # quantized (not exact), and far better than one int8 grid
    stored = sum(t.ByteSize() for t in converted.graph.initializer)
    assert stored < 0.4 * sum(t.ByteSize() for t in model.graph.initializer)


def test_only_plain_gemms_with_a_block_of_inputs_are_offered_the_form():
    model = _gemm_model()
    assert blockwise_fc.supports(model, model.graph.node[0])
    narrow = _gemm_model(inputs=blockwise_fc.BLOCK_SIZE - 1)
    assert not blockwise_fc.supports(narrow, narrow.graph.node[0])
    transposed = _gemm_model(trans_a=1)
    assert not blockwise_fc.supports(transposed, transposed.graph.node[0])


def test_no_node_named_leaves_the_graph_unchanged():
    model = _gemm_model()
    assert blockwise_fc.to_blockwise(model, []) == model
