"""Edits of a static QDQ ONNX graph after quantization, and reading intermediate tensors.

- `float_output`: drop the Quantize/Dequantize pair on the graph output, so the last layer
  returns its float result (QGemm / QLinearConv with float output) and the codeword is never
  rounded to one per-tensor 8-bit grid. An FC codeword has outliers: one grid over its full
  range costs more than the int8 weights and inputs of the layer together.
- `correct_output_bias`: the mean codeword error of the INT8 graph over the calibration set
  is a constant shift per codeword entry (rounding of weights and inputs is not zero-mean
  through the non-linearities); subtracting it from the last layer's bias removes it
  (empirical bias correction, as in Nagel et al., "Data-Free Quantization", 2019, sec. 4.2).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

_PASS_THROUGH = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def float_output(model: onnx.ModelProto) -> bool:
    """Remove the Q/DQ pair in front of each graph output; True when one was removed."""
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    removed = False
    for output in graph.output:
        dq = producer.get(output.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or _readers(graph, q.output[0]) != [dq]:
            continue
        source = producer.get(q.input[0])
        if source is None or _readers(graph, q.input[0]) != [q]:
            continue
        source.output[list(source.output).index(q.input[0])] = output.name
        graph.node.remove(q)
        graph.node.remove(dq)
        removed = True
    if removed:
        _drop_unused_initializers(graph)
    return removed


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


def _readers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if tensor in node.input]


def output_layer(model: onnx.ModelProto) -> onnx.NodeProto | None:
    """The Gemm / Conv whose result is the (single) graph output, through reshapes only."""
    graph = model.graph
    if len(graph.output) != 1:
        return None
    producer = {out: node for node in graph.node for out in node.output}
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producer.get(node.input[0])
    if node is None or node.op_type not in ("Gemm", "Conv") or len(node.input) < 3:
        return None
    return node


def correct_output_bias(
    model: onnx.ModelProto, encode: Callable[[onnx.ModelProto], np.ndarray], target: np.ndarray
) -> np.ndarray | None:
    """Shift the output layer's bias by the mean error of `encode(model)` against `target`
    (codewords (N, M) of the float graph on the same samples). Returns the shift applied, or
    None when the graph's output layer has no bias one can shift entry by entry."""
    layer = output_layer(model)
    if layer is None:
        return None
    error = np.asarray(encode(model), dtype=np.float64) - np.asarray(target, dtype=np.float64)
    shift = error.reshape(len(error), -1).mean(axis=0)
    return shift if _shift_bias(model, layer.input[2], shift) else None


def _shift_bias(model: onnx.ModelProto, bias: str, shift: np.ndarray) -> bool:
    """Subtract `shift` from the bias tensor `bias`: a float initializer, or an int32 one
    read through a DequantizeLinear (scale per channel or per tensor)."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    if bias in constants:
        values = numpy_helper.to_array(constants[bias]).astype(np.float64)
        if values.shape != shift.shape:
            return False
        _replace(graph, constants[bias], (values - shift).astype(np.float32))
        return True
    dq = producer.get(bias)
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in constants:
        return False
    stored = constants[dq.input[0]]
    values = numpy_helper.to_array(stored).astype(np.int64)
    scale = numpy_helper.to_array(constants[dq.input[1]]).astype(np.float64)
    if values.shape != shift.shape:
        return False
    moved = np.round(values - shift / scale)
    info = np.iinfo(np.int32)
    _replace(graph, stored, np.clip(moved, info.min, info.max).astype(np.int32))
    return True


def _replace(graph: onnx.GraphProto, tensor: onnx.TensorProto, values: np.ndarray) -> None:
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def intermediate_values(
    path: str | os.PathLike[str], names: Sequence[str], feeds: np.ndarray, *, batch: int = 64
) -> dict[str, np.ndarray]:
    """The float graph's tensors `names` on `feeds` (the first input), batch by batch."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    chunks = [
        session.run(list(names), {input_name: feeds[i : i + batch]})
        for i in range(0, len(feeds), batch)
    ]
    return {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(names)}
