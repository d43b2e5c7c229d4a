"""INT8 ONNX encoders with onnxruntime.quantization: static QDQ with calibration, or dynamic.

Static (`quantize_static_onnx`): QDQ format, int8 weights quantized per output channel, and
activations calibrated on representative CSI with MinMax, Entropy or Percentile ranges. The
float graph first goes through `quant_pre_process` with `skip_symbolic_shape=True` (the
symbolic shape inference fails on ReduceMax / ReduceMean, which CLNet's attention uses).

Activation type: QInt8 (signed int8 activations and weights, "S8S8"). Measured on CLNet
CR 1/4 encoders (tables in `docs/int8.md`): faster than QUInt8 with ONNX Runtime on an AVX2
x86 CPU (277 vs 349 us p50 on the shipped checkpoint) and never less accurate (QUInt8 with an
8-bit CSI input lost 6.7 dB NMSE there); int8 activations are also what mobile NPUs and
XNNPACK expect.

Float CSI input (`float_input=True`, the default): the layers that read the raw CSI are
excluded from quantization, so the CSI is never rounded to 8 bits. COST2100-style CSI is
sparse: almost every entry lies within a few thousandths of 0.5 and a few taps reach the ends
of [0, 1], so a per-tensor 8-bit grid (step ~0.003) costs about -13.5 dB NMSE on synthetic
indoor CSI by itself, more than a trained CR 1/4 model's own error. For the same reason any
computation on the CSI before the first learned layer stays float (DualNet-MP's magnitude,
cosine and sign matrices: an 8-bit grid on `csi - 0.5` wipes out most magnitudes and turns
the cosine `re / |H|` into noise).

Codeword quantizers after the last learned layer (LSQ's divide-round-clip, SSQ's levelling)
always stay float: they already output integer levels, and an 8-bit grid on their inputs only
moves levels.

Dynamic (`quantize_dynamic_onnx`): int8 weights of MatMul / Gemm only, activations quantized
on the fly. Convolutions stay float on purpose: ONNX Runtime's ConvInteger is slower than its
float convolution. CLNet's kernel-1 Conv1d is exported as Gemm (see
`csideploy.transforms.linearize_pointwise_convs`), so the layer holding almost every weight
is quantized either way.

What is left in float and how much each tensor changed (`float_ops`, `layer_sqnr`) is
`csideploy.quantize.diagnostics`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from csideploy.errors import DataError
from csideploy.quantize.base import get_method
from csideploy.quantize.calibration_data import (
    CALIBRATION_BATCH,
    ArrayReader,
    equal_batch_size,
    quiet_quantizer,
)
from csideploy.quantize.diagnostics import (  # noqa: F401 (the INT8 step reads them here)
    DATA_MOVEMENT_OPS,
    LayerError,
    float_ops,
    int8_initializers,
    layer_sqnr,
)

DYNAMIC_OP_TYPES = ("MatMul", "Gemm")
ACTIVATION_TYPE = "QInt8"
WEIGHT_TYPE = "QInt8"


@dataclass(frozen=True)
class TensorQuantization:
    """Scale and zero point of a quantized graph input or output (the handset's contract)."""

    tensor: str
    scale: float
    zero_point: int
    dtype: str


@dataclass(frozen=True)
class QuantizationParams:
    """How an INT8 graph was made and what it holds."""

    mode: str
    """"static" (QDQ, calibrated) or "dynamic" (activations quantized at run time)."""
    quant_format: str
    weight_type: str
    activation_type: str | None
    per_channel: bool
    calibration_method: str | None
    calibration_samples: int | None
    op_types_to_quantize: tuple[str, ...] | None
    quantized_weights: tuple[str, ...]
    """Initializers stored as int8."""
    excluded_nodes: tuple[str, ...] = ()
    """Nodes kept in float on purpose (static: the layers that read the raw CSI)."""
    input: TensorQuantization | None = None
    output: TensorQuantization | None = None
    onnxruntime_version: str = ""
    layer_plan: Mapping[str, Any] | None = None
    """Which layers are int8 and why the others stay float (`csideploy.quantize.onnx_plan`)."""
    bias_correction: bool = False
    """The output layer's bias was shifted by the mean codeword error on calibration data."""
    equalized: Mapping[str, float] | None = None
    """FC layers whose inputs were equalised before quantization -> the SmoothQuant alpha."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QuantizedGraph:
    """The result of one quantization: its parameters and the pre-processed float graph."""

    params: QuantizationParams
    preprocessed_path: Path
    """The float graph the quantizer saw (same tensor names), for `layer_sqnr`."""
    extra: Mapping[str, Any] = field(default_factory=dict)


def check_calibration_method(method: str) -> str:
    accepted = get_method("static").calibration
    if method not in accepted:
        raise ValueError(f"calibration method must be one of {accepted}, got {method!r}")
    return method


def preprocess(float_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """`quant_pre_process` without symbolic shape inference (it fails on Reduce* ops)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with quiet_quantizer():
        quant_pre_process(str(float_path), str(out_path), skip_symbolic_shape=True)
    return Path(out_path)


def quantize_static_onnx(
    float_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: np.ndarray,
    *,
    method: str = "minmax",
    workdir: str | os.PathLike[str],
    activation_type: str = ACTIVATION_TYPE,
    float_input: bool = True,
    batch_size: int = CALIBRATION_BATCH,
    nodes: Sequence[str] | None = None,
    preprocessed: bool = False,
) -> QuantizedGraph:
    """Static QDQ INT8 of the float graph at `float_path`, calibrated on `calibration`.

    Weights: int8 per output channel. Activations: `activation_type` ("QInt8" or "QUInt8"),
    ranges from `method`. With `float_input`, the layers that read the raw CSI stay float and
    the CSI is never rounded to 8 bits (see the module docstring). `nodes`: quantize only
    these nodes (None: every node not left float). Calibration batches all have one size
    (entropy and percentile stack them). `preprocessed`: `float_path` already went through
    `preprocess`. Intermediate files go to `workdir`.
    """
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    check_calibration_method(method)
    if calibration is None or len(calibration) == 0:
        raise DataError("static INT8 needs calibration CSI; none was given")
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    workdir = Path(workdir)
    prepared = Path(float_path)
    if not preprocessed:
        prepared = preprocess(float_path, workdir / "encoder.preprocessed.onnx")
    graph = onnx.load(str(prepared), load_external_data=False).graph
    input_name = graph.input[0].name
    excluded = float_nodes(graph, float_input=float_input)
    if nodes is not None:
        excluded = [n.name for n in graph.node if n.name not in set(nodes)]
    batch = equal_batch_size(len(calibration), batch_size)
    reader = ArrayReader(input_name, calibration, batch)
    with quiet_quantizer():
        quantize_static(
            str(prepared),
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            activation_type=getattr(QuantType, activation_type),
            weight_type=getattr(QuantType, WEIGHT_TYPE),
            calibrate_method=methods[method],
            nodes_to_quantize=list(nodes) if nodes else None,
            nodes_to_exclude=excluded,
            extra_options={"CalibTensorRangeSymmetric": False},
            calibration_cache_path=None,
        )
    model = onnx.load(str(out_path))
    params = QuantizationParams(
        mode="static",
        quant_format="QDQ",
        weight_type=WEIGHT_TYPE,
        activation_type=activation_type,
        per_channel=True,
        calibration_method=method,
        calibration_samples=len(calibration),
        op_types_to_quantize=None,
        quantized_weights=int8_initializers(model),
        excluded_nodes=tuple(excluded),
        input=_boundary_quantization(model, model.graph.input[0].name, consumer=True),
        output=_boundary_quantization(model, model.graph.output[0].name, consumer=False),
        onnxruntime_version=ort_version,
    )
    return QuantizedGraph(params=params, preprocessed_path=prepared)


def input_readers(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes that read the graph's (first) input directly."""
    name = graph.input[0].name
    return [node.name for node in graph.node if name in node.input]


def float_nodes(graph: onnx.GraphProto, *, float_input: bool = True) -> list[str]:
    """Names of the nodes static INT8 leaves in float, in graph order (see the module
    docstring): with `float_input`, the input readers and the unlearned nodes before the first
    learned layer; always, the compute nodes after the last learned layer. A learned layer is
    a node with a weight (an initializer of rank >= 2); `graph.node` is topologically sorted.
    """
    nodes = list(graph.node)
    weights = {t.name for t in graph.initializer if len(t.dims) >= 2}
    learned = {i for i, n in enumerate(nodes) if weights.intersection(n.input)}
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    sources = [{producer[x] for x in n.input if x in producer} for n in nodes]
    after_learning: set[int] = set()
    for i in range(len(nodes)):
        if sources[i] & (learned | after_learning):
            after_learning.add(i)
    feeds_learning: set[int] = set()
    for i in reversed(range(len(nodes))):
        if i in learned or i in feeds_learning:
            feeds_learning |= sources[i]
    keep = set()
    if float_input:
        readers = set(input_readers(graph))
        keep |= {i for i, n in enumerate(nodes) if n.name in readers}
        keep |= {i for i in range(len(nodes)) if i not in after_learning and i not in learned}
    keep |= {
        i
        for i in after_learning - feeds_learning - learned
        if nodes[i].op_type not in DATA_MOVEMENT_OPS
    }
    return [nodes[i].name for i in sorted(keep)]


def quantize_dynamic_onnx(
    float_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    workdir: str | os.PathLike[str],
) -> QuantizedGraph:
    """Dynamic INT8: int8 weights for MatMul / Gemm only; everything else stays float."""
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import QuantType, quantize_dynamic

    prepared = preprocess(float_path, Path(workdir) / "encoder.preprocessed.onnx")
    with quiet_quantizer():
        quantize_dynamic(
            str(prepared),
            str(out_path),
            op_types_to_quantize=list(DYNAMIC_OP_TYPES),
            per_channel=False,
            reduce_range=False,
            weight_type=getattr(QuantType, WEIGHT_TYPE),
        )
    model = onnx.load(str(out_path))
    params = QuantizationParams(
        mode="dynamic",
        quant_format="QOperator (dynamic)",
        weight_type=WEIGHT_TYPE,
        activation_type=None,
        per_channel=False,
        calibration_method=None,
        calibration_samples=None,
        op_types_to_quantize=DYNAMIC_OP_TYPES,
        quantized_weights=int8_initializers(model),
        onnxruntime_version=ort_version,
    )
    return QuantizedGraph(params=params, preprocessed_path=prepared)


def _boundary_quantization(
    model: onnx.ModelProto, tensor: str, *, consumer: bool
) -> TensorQuantization | None:
    """Scale / zero point of the Q/DQ pair at a graph input (consumer) or output (producer)."""
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if consumer and node.op_type == "QuantizeLinear" and node.input[0] == tensor:
            return _params(tensor, node, constants)
        if not consumer and node.op_type == "DequantizeLinear" and node.output[0] == tensor:
            return _params(tensor, node, constants)
    return None


def _params(
    tensor: str, node: onnx.NodeProto, constants: Mapping[str, onnx.TensorProto]
) -> TensorQuantization | None:
    if len(node.input) < 3 or node.input[1] not in constants or node.input[2] not in constants:
        return None
    scale = numpy_helper.to_array(constants[node.input[1]])
    zero = numpy_helper.to_array(constants[node.input[2]])
    if scale.size != 1:
        return None
    return TensorQuantization(
        tensor=tensor,
        scale=float(scale.reshape(())),
        zero_point=int(zero.reshape(())),
        dtype=zero.dtype.name,
    )
