"""Input equalisation of a fully connected layer before INT8 (SmoothQuant-style).

The input of a CSI encoder's FC layer is the flattened feature map: 2048 features whose
ranges differ by orders of magnitude (a few strong delay taps, many near-silent ones). One
per-tensor int8 grid over that input rounds most features to zero; on CRNet CR 1/64 it is
the largest error of the quantized encoder. Dividing each input feature by a scale s_k and
multiplying the weight column k by the same s_k leaves the float layer unchanged and
evens out the input ranges; the weights take the spread, and their grids are per output
channel. With s_k = max|x_k|^alpha / max|W_k|^(1 - alpha) (Xiao et al., "SmoothQuant",
2023), `alpha` moves the difficulty between input and weights; `choose_scales` picks it by
simulating the int8 layer on the calibration activations (codeword SQNR, best wins, "no
scaling" included).

In ONNX the division is a float `Mul` in front of the layer (2048 multiplies); in torch the
same `Mul` becomes part of the module (`EqualizedLinear`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from csideploy.metrics import sqnr_db

ALPHAS = (0.0, 0.15, 0.3, 0.45, 0.6)
RANGE_FLOOR = 1e-2
"""Smallest input range used for a feature, as a share of the largest (silent features)."""


@dataclass(frozen=True)
class Equalization:
    """Scales for one layer's input features and the measured benefit."""

    scales: np.ndarray
    alpha: float | None
    """None: no scaling (it simulated best)."""
    sqnr_db: float
    plain_sqnr_db: float


def _fake_quant_input(x: np.ndarray, calib: np.ndarray) -> np.ndarray:
    """Asymmetric per-tensor int8 with the calibration min/max (what static QDQ does)."""
    low, high = min(float(calib.min()), 0.0), max(float(calib.max()), 0.0)
    if high <= low:
        return x
    scale = (high - low) / 255.0
    zero = np.round(-128 - low / scale)
    return (np.clip(np.round(x / scale) + zero, -128, 127) - zero) * scale


def _fake_quant_weight(w: np.ndarray) -> np.ndarray:
    """Symmetric int8 per output channel (rows of `w`)."""
    scale = np.maximum(np.abs(w).max(axis=1, keepdims=True), 1e-12) / 127.0
    return np.round(w / scale) * scale


def choose_scales(x: np.ndarray, w: np.ndarray) -> Equalization:
    """Best input scales for `y = x @ w.T` (x: (N, K) calibration inputs, w: (M, K)).

    Ranges are fitted on one half of the samples and the SQNR measured on the other, so that
    an `alpha` fitting the calibration outliers exactly does not win by overfitting them; the
    scales returned are then fitted on all samples.
    """
    x = x.reshape(len(x), -1).astype(np.float64)
    w = w.astype(np.float64)
    half = max(len(x) // 2, 1)
    fit, held = (x[:half], x[half:]) if len(x) > 1 else (x, x)
    reference = held @ w.T
    plain = sqnr_db(reference, _fake_quant_input(held, fit) @ _fake_quant_weight(w).T)
    best = Equalization(np.ones(x.shape[1]), None, plain, plain)
    for alpha in ALPHAS:
        scales = _scales(fit, w, alpha)
        quantized = _fake_quant_input(held / scales, fit / scales)
        sqnr = sqnr_db(reference, quantized @ _fake_quant_weight(w * scales).T)
        if sqnr > best.sqnr_db:
            best = Equalization(_scales(x, w, alpha), alpha, sqnr, plain)
    return best


def _scales(x: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """max|x_k|^alpha / max|W_k|^(1 - alpha), geometric mean 1 (silent inputs floored)."""
    x_range = np.abs(x).max(axis=0)
    x_range = np.maximum(x_range, RANGE_FLOOR * max(float(x_range.max()), 1e-12))
    w_range = np.maximum(np.abs(w).max(axis=0), 1e-12)
    scales = x_range**alpha / w_range ** (1.0 - alpha)
    return scales / np.exp(np.mean(np.log(scales)))


def gemm_weight(model: onnx.ModelProto, node: onnx.NodeProto) -> np.ndarray | None:
    """The (M, K) weight of a Gemm / MatMul node with a constant 2-D weight, else None."""
    constants = {t.name: t for t in model.graph.initializer}
    if node.op_type not in ("Gemm", "MatMul") or node.input[1] not in constants:
        return None
    w = numpy_helper.to_array(constants[node.input[1]])
    if w.ndim != 2:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Gemm" and attrs.get("transA", 0):
        return None
    transposed = node.op_type == "Gemm" and attrs.get("transB", 0)
    return w if transposed else w.T


def equalize_onnx(model: onnx.ModelProto, node: onnx.NodeProto, scales: np.ndarray) -> None:
    """Insert `x / scales` in front of `node` and scale its weight columns to match."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    weight = constants[node.input[1]]
    w = numpy_helper.to_array(weight)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    transposed = node.op_type == "Gemm" and bool(attrs.get("transB", 0))
    scaled = w * scales[None, :] if transposed else w * scales[:, None]
    weight.CopyFrom(numpy_helper.from_array(scaled.astype(w.dtype), weight.name))
    inverse = f"{node.name}/equalize_scale"
    graph.initializer.append(numpy_helper.from_array((1.0 / scales).astype(np.float32), inverse))
    source, target = node.input[0], f"{node.input[0]}_equalized"
    mul = helper.make_node("Mul", [source, inverse], [target], name=f"{node.name}/Equalize")
    node.input[0] = target
    position = list(graph.node).index(node)
    graph.node.insert(position, mul)


class EqualizedLinear(nn.Module):
    """`linear(x / scales)` with the weight columns multiplied by `scales`: the same float
    function, with evened-out input ranges for the int8 layer. A `PointwiseLinear` (a
    kernel-1 Conv1d over (N, C, L)) takes the scales on its channel axis."""

    def __init__(self, linear: nn.Linear, scales: np.ndarray) -> None:
        from csideploy.transforms.linearize import PointwiseLinear

        super().__init__()
        scale = torch.as_tensor(scales, dtype=linear.weight.dtype)
        pointwise = isinstance(linear, PointwiseLinear)
        shape = (1, -1, 1) if pointwise else (-1,)
        self.register_buffer("inverse_scale", (1.0 / scale).reshape(shape))
        self.linear = copy.deepcopy(linear)
        with torch.no_grad():
            self.linear.weight.copy_(linear.weight * scale[None, :])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inverse_scale)
