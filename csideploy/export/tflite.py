"""TFLite export of a UE encoder for mobile CPUs: fp32, dynamic-range INT8, full-integer INT8.

Conversion goes through litert-torch. Quantization uses its PT2E quantizer (per-channel
symmetric int8 weights, per-tensor affine int8 activations) on a `torch.export` graph:

- ``int8``: static, full integer. The prepared graph is calibrated on the given CSI (the
  same array the ONNX path calibrates with); the converter then emits int8 kernels end to
  end, and folds the quantization of the model input and output into the I/O tensors, so
  the file takes and returns int8 with a recorded scale and zero point. With
  ``io="float"`` the file gets a QUANTIZE op in front and a DEQUANTIZE op behind
  instead (a flatbuffer edit; the integer graph is the same), for callers that keep float
  buffers. Where the converter hands back float I/O (a dequantized output that float ops
  inside the graph also read), ``io="int8"`` moves the boundary to int8 by a flatbuffer edit
  that keeps what those ops need.
- ``dynamic``: dynamic-range; int8 weights, float activations quantized on the fly by the
  hybrid kernels. No calibration.
- ``fp32``: plain float.

Every file is single-signature ``serving_default`` with one input (`input_name`, default
``csi``), fixed batch 1. An encoder returning one tensor gets one output (`output_name`, default
``codeword``); one returning a tuple (a handset graph with several codeword parts) gets one
output per element, named by `output_names` and listed in the order torch returns them, in the
signature and in the subgraph alike. ``layout="nhwc"`` wraps the encoder with a permute so
that the handset feeds (1, 32, 32, 2) channel-last buffers; the converter cancels the permute
against its own layout transposes.

Integer outputs (an encoder that casts its quantized codeword to int8 / uint8 / int16 / int32)
stay integer tensors holding the raw values in every precision: no scale, no DEQUANTIZE. Only
float outputs follow `io`. In ``int8`` the quantizer observes float tensors only (never an index
buffer or a cast result), and the levelling arithmetic right before an integer cast (scale,
offset, round, clamp) stays float so that the cast sees real levels, not int8 activations.

litert-torch, torchao and ai-edge-litert are imported only when a conversion runs: a missing
``tflite`` extra surfaces as `MissingDependencyError`, never as an import failure elsewhere.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.errors import (
    CsiDeployError,
    DataError,
    MissingDependencyError,
    OutputExistsError,
    ShapeError,
)
from csideploy.export.tflite_convert import convert

PRECISIONS = ("fp32", "int8", "dynamic")
IO_TYPES = ("int8", "float")
LAYOUTS = ("nchw", "nhwc")
FILE_NAMES = {
    "fp32": "encoder.tflite",
    "int8": "encoder.int8.tflite",
    "dynamic": "encoder.dyn.tflite",
}
"""Conventional file name of each precision inside a bundle."""

TFLITE_EXTRA_MESSAGE = "TFLite export needs the 'tflite' extra: pip install 'csideploy[tflite]'"
SIGNATURE_KEY = "serving_default"
CSI_NCHW = (2, 32, 32)

# Ops that only move data between float and integer at the model boundary.
_BOUNDARY_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
# Op name -> index of its weight operand.
_WEIGHT_OPERAND = {
    "CONV_2D": 1,
    "DEPTHWISE_CONV_2D": 1,
    "FULLY_CONNECTED": 1,
    "TRANSPOSE_CONV": 1,
    "CONV_3D": 1,
    "BATCH_MATMUL": 1,
}


@dataclass(frozen=True)
class TfliteExportConfig:
    """Options of one TFLite conversion, validated up front.

    `io` applies to ``int8`` only: fp32 and dynamic-range files always have float I/O.
    `calibration_batch` is how many calibration samples run through the observers at once.
    `output_names` names an encoder's outputs in torch order (required when it returns a
    tuple); without it the single output is `output_name`.
    """

    precision: str
    io: str = "int8"
    layout: str = "nchw"
    input_name: str = "csi"
    output_name: str = "codeword"
    calibration_batch: int = 64
    output_names: tuple[str, ...] | None = None
    """Names of the encoder's outputs in torch order; when given, `output_name` is unused."""
    layers: tuple[str, ...] | None = None
    """``int8`` only: quantize just these modules (paths inside the encoder), the rest
    float, with float I/O; None quantizes every layer (full integer)."""

    def __post_init__(self) -> None:
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("io", self.io, IO_TYPES)
        _check_choice("layout", self.layout, LAYOUTS)
        _check_identifier("input_name", self.input_name)
        if self.output_names is None:
            _check_identifier("output_name", self.output_name)
            if self.input_name == self.output_name:
                raise ValueError("input_name and output_name must differ")
        else:
            if isinstance(self.output_names, str):
                raise ValueError(
                    f"output_names must be a sequence of names, got {self.output_names!r}"
                )
            object.__setattr__(self, "output_names", tuple(self.output_names))
            self._check_output_names(self.output_names)
        if self.calibration_batch < 1:
            raise ValueError(f"calibration_batch must be >= 1, got {self.calibration_batch}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
            if self.io != "float":
                raise ValueError("quantizing selected layers keeps float I/O: pass io='float'")

    def _check_output_names(self, names: tuple[str, ...]) -> None:
        if not names:
            raise ValueError("output_names must name at least one output")
        for name in names:
            _check_identifier("output_names", name)
        if len(set(names)) != len(names):
            raise ValueError(f"output_names must be distinct, got {list(names)}")
        if self.input_name in names:
            raise ValueError(f"input_name {self.input_name!r} must differ from the output names")

    @property
    def names(self) -> tuple[str, ...]:
        """The output names in torch order: `output_names`, else (`output_name`,)."""
        return self.output_names if self.output_names is not None else (self.output_name,)

    @property
    def io_dtype(self) -> str:
        """The dtype of the file's input and float outputs (integer outputs keep their own)."""
        return "int8" if self.precision == "int8" and self.io == "int8" else "float32"

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The input signature, batch 1."""
        return (1, *CSI_NCHW) if self.layout == "nchw" else (1, 32, 32, 2)


@dataclass(frozen=True)
class TensorSpec:
    """A signature tensor: name, shape, dtype and, when integer, its affine quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TfliteGraphInfo:
    """What a `.tflite` file holds, read from its flatbuffer.

    `ops` are the distinct operator names; `float_ops` those that compute on float
    activations (QUANTIZE / DEQUANTIZE at the boundary excluded): in a full-INT8 file these are
    the ops left in float, in fp32 and dynamic-range files every op. `weight_dtypes` are the
    dtypes of the weight operands of conv / fully-connected / matmul ops.
    """

    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...]
    op_count: int
    float_ops: tuple[str, ...]
    weight_dtypes: tuple[str, ...]

    @property
    def output(self) -> TensorSpec:
        """The first (for most encoders the only) output."""
        return self.outputs[0]


@dataclass(frozen=True)
class TfliteArtifact:
    """A written `.tflite` encoder and its contract; `outputs` are in torch order."""

    path: Path
    precision: str
    layout: str
    io_dtype: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...]
    op_count: int
    float_ops: tuple[str, ...]
    weight_dtypes: tuple[str, ...]
    num_bytes: int
    sha256: str
    calibration_samples: int | None
    conversion_seconds: float
    converter: str

    @property
    def output(self) -> TensorSpec:
        """The first (for most encoders the only) output."""
        return self.outputs[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the path as a string; `output` repeats the first of `outputs`)."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["input"] = self.input.to_dict()
        data["outputs"] = [spec.to_dict() for spec in self.outputs]
        data["output"] = self.output.to_dict()
        return data


@dataclass(frozen=True)
class _TorchOutput:
    """One output as the torch encoder returns it at batch 1: what the file must reproduce."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def integer(self) -> bool:
        """Raw integer values (a cast in torch), as opposed to a float tensor."""
        return self.dtype != "float32"


def export_tflite(
    encoder: nn.Module,
    out_path: str | os.PathLike[str],
    *,
    precision: str,
    calibration: np.ndarray | None = None,
    io: str = "int8",
    layout: str = "nchw",
    input_name: str = "csi",
    output_name: str = "codeword",
    output_names: Sequence[str] | None = None,
    calibration_batch: int = 64,
    overwrite: bool = False,
    layers: Sequence[str] | None = None,
) -> TfliteArtifact:
    """Convert `encoder` (NCHW (N, 2, 32, 32) -> (N, M), or a tuple of such outputs) to a
    `.tflite` file at `out_path`.

    An encoder returning a tuple needs `output_names`, one per element in torch order; the
    file's outputs carry those names in that order. `calibration` (NCHW float CSI, whatever
    `layout` is) is required for ``int8`` and unused otherwise. The file is written to a
    temporary sibling and renamed into place. `layers`: ``int8`` with only these modules
    (paths inside `encoder`) quantized and float I/O (see `TfliteExportConfig.layers`).
    """
    config = TfliteExportConfig(
        precision=precision,
        io=io,
        layout=layout,
        input_name=input_name,
        output_name=output_name,
        output_names=None if output_names is None else tuple(output_names),
        calibration_batch=calibration_batch,
        layers=None if layers is None else tuple(layers),
    )
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path} exists; pass overwrite=True to replace it")
    if config.precision == "int8":
        calibration = _check_calibration(calibration)
    module = _Boundary(_frozen_copy(encoder), nhwc=config.layout == "nhwc").eval()
    sample = torch.rand(config.input_shape, generator=torch.Generator().manual_seed(0))
    outputs = _torch_outputs(module, sample, config)
    litert = _import_litert()

    started = time.perf_counter()
    model_bytes = convert(litert, module, sample, config, calibration)
    model_bytes = _set_interface(litert, model_bytes, config, outputs)
    seconds = time.perf_counter() - started
    info = _inspect_bytes(model_bytes, str(out_path))
    _check_contract(info, config, out_path, outputs)
    _write_atomic(out_path, model_bytes, overwrite=overwrite)
    return TfliteArtifact(
        path=out_path,
        precision=config.precision,
        layout=config.layout,
        io_dtype=config.io_dtype,
        input=info.input,
        outputs=info.outputs,
        ops=info.ops,
        op_count=info.op_count,
        float_ops=info.float_ops,
        weight_dtypes=info.weight_dtypes,
        num_bytes=len(model_bytes),
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        calibration_samples=None if calibration is None else len(calibration),
        conversion_seconds=round(seconds, 3),
        converter=f"litert-torch {litert.version}",
    )


def inspect_tflite(path: str | os.PathLike[str]) -> TfliteGraphInfo:
    """Read the signature tensors, operator names and weight dtypes of a `.tflite` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TFLite model not found: {path}")
    return _inspect_bytes(path.read_bytes(), str(path))


def _inspect_bytes(data: bytes, path: str) -> TfliteGraphInfo:
    flatbuffer_utils, schema = _import_flatbuffer_tools()
    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    except Exception as error:
        raise DataError(f"{path}: not a readable TFLite flatbuffer ({error})") from error
    if not model.signatureDefs or len(model.subgraphs) != 1:
        raise DataError(f"{path}: expected one subgraph with a signature")
    signature = model.signatureDefs[0]
    if len(signature.inputs) != 1 or not signature.outputs:
        raise DataError(
            f"{path}: expected one signature input and at least one output, got "
            f"{len(signature.inputs)} inputs and {len(signature.outputs)} outputs"
        )
    graph = model.subgraphs[0]
    op_names = [_op_name(model, op, schema) for op in graph.operators]

    def is_constant(index: int) -> bool:
        buffer = model.buffers[graph.tensors[index].buffer]
        return buffer.data is not None and len(buffer.data) > 0

    float_ops: set[str] = set()
    weight_dtypes: set[str] = set()
    for name, op in zip(op_names, graph.operators, strict=True):
        activations = [i for i in (*op.inputs, *op.outputs) if i >= 0 and not is_constant(i)]
        if name not in _BOUNDARY_OPS and any(
            graph.tensors[i].type == schema.TensorType.FLOAT32 for i in activations
        ):
            float_ops.add(name)
        operand = _WEIGHT_OPERAND.get(name)
        if operand is not None and operand < len(op.inputs) and op.inputs[operand] >= 0:
            index = op.inputs[operand]
            if is_constant(index):
                weight_dtypes.add(_dtype_name(graph.tensors[index].type, schema))
    return TfliteGraphInfo(
        input=_tensor_spec(graph, signature.inputs[0], schema),
        outputs=tuple(_tensor_spec(graph, entry, schema) for entry in signature.outputs),
        ops=tuple(sorted(set(op_names))),
        op_count=len(op_names),
        float_ops=tuple(sorted(float_ops)),
        weight_dtypes=tuple(sorted(weight_dtypes)),
    )


# --- conversion -----------------------------------------------------------------------------


class _Boundary(nn.Module):
    """The encoder as the handset sees it: optional NHWC -> NCHW permute at the input."""

    def __init__(self, encoder: nn.Module, *, nhwc: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.nhwc = nhwc

    def forward(self, csi: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.nhwc:
            csi = csi.permute(0, 3, 1, 2)
        return self.encoder(csi)


_INTEGER_OUTPUT_DTYPES = {
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.int16: "int16",
    torch.int32: "int32",
}


def _torch_outputs(
    module: nn.Module, sample: torch.Tensor, config: TfliteExportConfig
) -> tuple[_TorchOutput, ...]:
    """Name, dtype and batch-1 shape of every output `module` returns, checked against the
    names the config gives (one per output) before anything is converted."""
    with torch.no_grad():
        result = module(sample)
    tensors = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("the encoder must return a tensor or a tuple of tensors")
    names = config.names
    if len(tensors) != len(names):
        if config.output_names is None:
            raise ValueError(
                f"the encoder returns {len(tensors)} outputs; pass output_names with one name "
                "per output, in the order the encoder returns them"
            )
        raise ValueError(
            f"output_names has {len(names)} names ({', '.join(names)}) but the encoder "
            f"returns {len(tensors)} outputs"
        )
    specs = []
    for name, tensor in zip(names, tensors, strict=True):
        if tensor.dtype == torch.float32:
            dtype = "float32"
        elif tensor.dtype in _INTEGER_OUTPUT_DTYPES:
            dtype = _INTEGER_OUTPUT_DTYPES[tensor.dtype]
        else:
            raise ValueError(
                f"output {name!r} is {tensor.dtype}; a TFLite encoder output must be float32, "
                "int8, uint8, int16 or int32 (cast it inside the module)"
            )
        specs.append(_TorchOutput(name, dtype, tuple(int(d) for d in tensor.shape)))
    return tuple(specs)


def _import_litert() -> SimpleNamespace:
    """The converter entry points, or MissingDependencyError naming the `tflite` extra."""
    try:
        import litert_torch
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as error:
        raise MissingDependencyError(f"{TFLITE_EXTRA_MESSAGE} ({error})") from error
    return SimpleNamespace(
        convert=litert_torch.convert,
        version=litert_torch.__version__,
        config=litert_torch.config,
        PT2EQuantizer=_csi_quantizer(pt2e_quantizer.PT2EQuantizer),
        quantization_config=pt2e_quantizer.get_symmetric_quantization_config,
        QuantConfig=QuantConfig,
        prepare_pt2e=prepare_pt2e,
        convert_pt2e=convert_pt2e,
    )


def _csi_quantizer(base: type) -> type:
    """litert-torch's PT2E quantizer with the fixes a CSI encoder needs.

    - One shared scale for wrap padding: a `cat` of a tensor with slices of itself (circular
      padding) and those slices take the tensor's own quantization. INT8 SLICE and
      CONCATENATION need equal input and output scales, and separate observers on the slices
      and the padded result break that (the converter refuses the graph).
    - Observers on every other `cat` it leaves bare. Its `cat` annotator finds concatenations
      through source-function metadata that `torch.export` no longer records for `torch.cat`, so it
      annotates none. The converter still emits an int8 CONCATENATION, whose kernel needs one
      scale for all inputs, and gives it the first input's scale, which clips the others
      (CLNet's attention merge lost ~30 dB SQNR that way). Observing each input and the output
      lets the converter requantize every input to the output's range.
    - Python integer scalars multiplying or offsetting a float tensor become float constants
      (the base class would make them int64 buffers and put a histogram observer on them).
    - Observers on float tensors only: index buffers, comparisons and cast results are never
      observed, whatever an annotator asked for.
    - The levelling arithmetic in front of an integer cast (see `_leave_levelling_float`) is
      left unquantized, so that the cast rounds real values.
    - Feature math on the input before the first learned layer (DualNet-MP's magnitude,
      cosine and sign matrices; see `_leave_feature_math_float`) is left unquantized; the
      first learned layer's input is quantized as usual.
    - A float model input that no annotated op observes (a graph that starts with slicing or
      elementwise feature math) gets an observer of its own, so that the file can take int8.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class CsiQuantizer(base):  # type: ignore[misc, valid-type]
        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            _float_scalars(model)
            return super().transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            layers = getattr(self, "layer_config", None)
            if layers is not None:  # selected layers only (see tflite_convert)
                quantization, inside = layers
                self._annotate_all_static_patterns(model, quantization, inside)
                _observe_float_only(model)
                return model
            model = super().annotate(model)
            config = self.global_config
            if config is not None and config.input_activation is not None:  # static
                _leave_feature_math_float(model)
                _share_padding_scales(model, config, QuantizationAnnotation)
                _observe_bare_concatenations(model, config, QuantizationAnnotation)
                _observe_model_inputs(model, config, QuantizationAnnotation)
                _leave_levelling_float(model)
            _observe_float_only(model)
            return model

    return CsiQuantizer


_ATEN = torch.ops.aten
_SCALAR_ARITHMETIC = (_ATEN.add.Tensor, _ATEN.sub.Tensor, _ATEN.mul.Tensor, _ATEN.div.Tensor)
_LEVELLING_OPS = (
    *_SCALAR_ARITHMETIC,
    _ATEN.round.default,
    _ATEN.ceil.default,
    _ATEN.floor.default,
    _ATEN.trunc.default,
    _ATEN.clamp.default,
    _ATEN.clamp.Tensor,
    _ATEN.clamp_min.default,
    _ATEN.clamp_max.default,
)
"""Elementwise ops that turn a float activation into integer levels before a cast."""
_CAST_OPS = (_ATEN.to.dtype, _ATEN._to_copy.default, _ATEN.to.dtype_layout)


def _node_dtype(model: torch.fx.GraphModule, node: Any) -> torch.dtype | None:
    """The dtype a graph node produces, when the graph records it (None when unknown)."""
    if not isinstance(node, torch.fx.Node):
        return None
    value = node.meta.get("val")
    if isinstance(value, torch.Tensor):
        return value.dtype
    attribute = _attribute(model, node)
    return attribute.dtype if attribute is not None else None


def _attribute(model: torch.fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor a `get_attr` node reads (a parameter or buffer), else None."""
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    attribute: Any = model
    for part in str(node.target).split("."):
        attribute = getattr(attribute, part, None)
    return attribute if isinstance(attribute, torch.Tensor) else None


def _is_float_node(model: torch.fx.GraphModule, node: Any) -> bool:
    """True unless the node is known to produce a non-float tensor."""
    dtype = _node_dtype(model, node)
    return dtype is None or dtype.is_floating_point


def _float_scalars(model: torch.fx.GraphModule) -> None:
    """Make integer scalars float in arithmetic on float tensors (the same value, exactly)."""
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in _SCALAR_ARITHMETIC:
            continue
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if not tensors or not all(_is_float_node(model, a) for a in tensors):
            continue
        node.args = tuple(
            float(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in node.args
        )


def _share_padding_scales(model: torch.fx.GraphModule, config: Any, annotation_class: type) -> None:
    """Give each wrap-padding `cat` and its slices the padded tensor's own observer."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    for node in model.graph.nodes:
        if node.op != "call_function" or node.target is not _ATEN.cat.default:
            continue
        source = _padding_source(node)
        if source is None or not _is_float_node(model, source):
            continue
        annotation = source.meta.get("quantization_annotation")
        if annotation is None:
            source.meta["quantization_annotation"] = annotation_class(
                output_qspec=config.output_activation, _annotated=True
            )
        elif annotation.output_qspec is None:
            annotation.output_qspec = config.output_activation
        shared = SharedQuantizationSpec(source)
        for part in node.args[0]:
            if part is not source:
                part.meta["quantization_annotation"] = annotation_class(
                    input_qspec_map={source: shared}, output_qspec=shared, _annotated=True
                )
        node.meta["quantization_annotation"] = annotation_class(
            input_qspec_map={part: shared for part in node.args[0]},
            output_qspec=shared,
            _annotated=True,
        )


def _padding_source(cat: Any) -> Any:
    """The tensor a `cat` wrap-pads (it joins the tensor with slices of it), else None."""
    parts = cat.args[0]
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, torch.fx.Node) for p in parts):
        return None
    sources = {
        p.args[0] if p.op == "call_function" and p.target is _ATEN.slice.Tensor else p
        for p in parts
    }
    if len(sources) != 1:
        return None
    (source,) = sources
    if source not in parts or any(len(p.users) != 1 for p in parts if p is not source):
        return None
    return source


def _observe_bare_concatenations(
    model: torch.fx.GraphModule, config: Any, annotation_class: type
) -> None:
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target is not _ATEN.cat.default:
            continue
        if "quantization_annotation" in node.meta:
            continue
        node.meta["quantization_annotation"] = annotation_class(
            input_qspec_map={
                arg: config.input_activation
                for arg in node.args[0]
                if isinstance(arg, torch.fx.Node)
            },
            output_qspec=config.output_activation,
            _annotated=True,
        )


def _observe_model_inputs(model: torch.fx.GraphModule, config: Any, annotation_class: type) -> None:
    """An observer on each float input that no annotated consumer observes already."""
    for node in model.graph.nodes:
        if node.op != "placeholder" or not _is_float_node(model, node):
            continue
        if "quantization_annotation" in node.meta:
            continue
        observed = any(
            node in getattr(user.meta.get("quantization_annotation"), "input_qspec_map", {})
            for user in node.users
        )
        if not observed:
            node.meta["quantization_annotation"] = annotation_class(
                output_qspec=config.input_activation, _annotated=True
            )


def _leave_levelling_float(model: torch.fx.GraphModule) -> None:
    """Drop the annotations of the levelling chain in front of each float -> integer cast.

    Walking back from the cast through `_LEVELLING_OPS` (scale by a constant, offset, round,
    clamp), as long as each op feeds nothing but the chain: quantizing those to int8 would
    hand the cast int8 activations instead of levels (or levels on a coarser grid).
    """
    for cast in model.graph.nodes:
        if cast.op != "call_function" or cast.target not in _CAST_OPS:
            continue
        dtype = _node_dtype(model, cast)
        if dtype is None or dtype.is_floating_point or dtype == torch.bool:
            continue
        chain = {cast}
        node = cast.args[0] if cast.args else None
        while (
            isinstance(node, torch.fx.Node)
            and node.op == "call_function"
            and node.target in _LEVELLING_OPS
            and _is_float_node(model, node)
            and {user for user in node.users if not _is_assertion(user)} <= chain
        ):
            node.meta.pop("quantization_annotation", None)
            chain.add(node)
            activations = [a for a in node.args if _is_activation(a)]
            node = activations[0] if len(activations) == 1 else None


_FEATURE_MATH_OPS = (
    _ATEN.sqrt.default,
    _ATEN.div.Tensor,
    _ATEN.where.self,
    _ATEN.sign.default,
    _ATEN.atan2.default,
    _ATEN.abs.default,
)
"""Non-linear elementwise ops that mark input feature math (a plain offset or scale does not)."""


def _leave_feature_math_float(model: torch.fx.GraphModule) -> None:
    """Drop the annotations of the ops that compute on the input before any learned layer,
    when those include non-linear feature math (`_FEATURE_MATH_OPS`).

    An int8 grid on `csi - 0.5` rounds most entries of sparse CSI to zero, and `re / |H|` of
    rounded values is noise (DualNet-MP lost 1.3 dB NMSE that way). A learned layer is an op
    with a weight (a get_attr tensor of rank >= 2). Encoders whose prefix is only an offset or
    a layout change are left as they are.
    """
    learned, downstream = set(), set()
    for node in model.graph.nodes:
        if node.op != "call_function":
            continue
        if any(_is_weight(model, a) for a in node.all_input_nodes):
            learned.add(node)
        elif any(a in learned or a in downstream for a in node.all_input_nodes):
            downstream.add(node)
    prefix = [
        n
        for n in model.graph.nodes
        if n.op == "call_function" and n not in learned and n not in downstream
    ]
    if not any(n.target in _FEATURE_MATH_OPS for n in prefix):
        return
    for node in prefix:
        node.meta.pop("quantization_annotation", None)


def _is_weight(model: torch.fx.GraphModule, node: Any) -> bool:
    """A parameter-like constant of rank >= 2 (a conv or linear weight)."""
    attribute = _attribute(model, node)
    return attribute is not None and attribute.dim() >= 2


def _is_assertion(node: Any) -> bool:
    """A shape / dtype check `torch.export` inserts; it computes nothing."""
    return node.op == "call_function" and getattr(node.target, "__name__", "").startswith("_assert")


def _is_activation(arg: Any) -> bool:
    """A node computed from the model input (not a constant buffer or parameter)."""
    return isinstance(arg, torch.fx.Node) and arg.op in ("call_function", "placeholder")


def _observe_float_only(model: torch.fx.GraphModule) -> None:
    """Strip every observer request on a tensor that is not float."""
    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is None:
            continue
        annotation.input_qspec_map = {
            arg: spec
            for arg, spec in annotation.input_qspec_map.items()
            if _is_float_node(model, arg)
        }
        if annotation.output_qspec is not None and not _is_float_node(model, node):
            annotation.output_qspec = None


def _import_flatbuffer_tools() -> tuple[Any, Any]:
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError as error:
        raise MissingDependencyError(f"{TFLITE_EXTRA_MESSAGE} ({error})") from error
    return flatbuffer_utils, schema


def _check_calibration(calibration: np.ndarray | None) -> np.ndarray:
    if calibration is None:
        raise DataError("static INT8 export needs calibration CSI (N, 2, 32, 32); got none")
    calibration = np.asarray(calibration)
    if calibration.ndim != 4 or tuple(calibration.shape[1:]) != CSI_NCHW:
        raise ShapeError(
            f"calibration: expected shape (N, 2, 32, 32), got {tuple(calibration.shape)}"
        )
    if len(calibration) == 0:
        raise DataError("calibration: the array holds no samples")
    if not np.issubdtype(calibration.dtype, np.floating):
        raise DataError(f"calibration: expected float CSI, got dtype {calibration.dtype}")
    if not np.isfinite(calibration).all():
        raise DataError("calibration: the array holds NaN or inf")
    return calibration.astype(np.float32, copy=False)


def _frozen_copy(encoder: nn.Module) -> nn.Module:
    """An eval-mode copy, so that conversion never touches the caller's module."""
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
    return copy.deepcopy(encoder).eval()


# --- flatbuffer interface -------------------------------------------------------------------


def _set_interface(
    litert: SimpleNamespace,
    model_bytes: bytes,
    config: TfliteExportConfig,
    outputs: Sequence[_TorchOutput] | None = None,
) -> bytes:
    """Give the file the output order, I/O dtype and signature names that `config` promises.

    `outputs` describe the torch encoder's outputs; without them every output of the file is
    taken as float, in the file's order.
    """
    flatbuffer_utils, schema = _import_flatbuffer_tools()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    if outputs is None:
        outputs = _float_outputs_of(model, config, schema)
    _order_outputs(model, outputs, schema)
    graph = model.subgraphs[0]
    float_positions = [k for k, output in enumerate(outputs) if not output.integer]
    boundary = [graph.inputs[0], *(graph.outputs[k] for k in float_positions)]
    integer_io = all(graph.tensors[i].type == schema.TensorType.INT8 for i in boundary)
    if config.io_dtype == "int8" and not integer_io:
        _to_integer_io(model, schema, float_positions)
    _rename_signature(model, config)
    if config.io_dtype == "float32":
        _add_float_io(model, schema, float_positions)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _float_outputs_of(
    model: Any, config: TfliteExportConfig, schema: Any
) -> tuple[_TorchOutput, ...]:
    """Every signature output of a file taken as a float output, in the file's order."""
    graph = model.subgraphs[0]
    entries = model.signatureDefs[0].outputs
    if len(entries) != len(config.names):
        raise CsiDeployError(
            f"the file has {len(entries)} outputs, the config names {len(config.names)}"
        )
    return tuple(
        _TorchOutput(name, "float32", tuple(int(d) for d in graph.tensors[entry.tensorIndex].shape))
        for name, entry in zip(config.names, entries, strict=True)
    )


def _order_outputs(model: Any, outputs: Sequence[_TorchOutput], schema: Any) -> None:
    """Put the signature outputs, and the subgraph outputs with them, in torch order, in place.

    Which converted output is which torch output: the name the converter gave it
    (``output_<k>`` for the k-th element of the returned tuple, or already the wanted name),
    else the one output of matching shape and dtype.
    """
    signature = model.signatureDefs[0]
    graph = model.subgraphs[0]
    entries = list(signature.outputs)
    if len(entries) != len(outputs):
        raise CsiDeployError(
            f"the converted file has {len(entries)} outputs, the encoder returns {len(outputs)}"
        )
    order = _match_by_name(entries, outputs)
    if order is None:
        order = _match_by_tensor(graph, entries, outputs, schema)
    signature.outputs = [entries[i] for i in order]
    indices = [entry.tensorIndex for entry in signature.outputs]
    if sorted(indices) != sorted(graph.outputs):
        raise CsiDeployError(
            "the converted file's signature outputs are not its subgraph outputs "
            f"({indices} vs {list(graph.outputs)})"
        )
    graph.outputs = indices


def _match_by_name(entries: list[Any], outputs: Sequence[_TorchOutput]) -> list[int] | None:
    """For each torch output, the index of the file output named after it, or None."""
    names = [_as_bytes(entry.name).decode() for entry in entries]
    for wanted in (
        [f"output_{k}" for k in range(len(outputs))],
        [output.name for output in outputs],
    ):
        if sorted(names) == sorted(wanted):
            return [names.index(name) for name in wanted]
    return None


def _match_by_tensor(
    graph: Any, entries: list[Any], outputs: Sequence[_TorchOutput], schema: Any
) -> list[int]:
    """For each torch output, the one file output of its shape and kind (integer dtype or
    float-valued), or CsiDeployError when that does not single one out."""

    def fits(entry: Any, output: _TorchOutput) -> bool:
        tensor = graph.tensors[entry.tensorIndex]
        if tuple(int(d) for d in tensor.shape) != output.shape:
            return False
        dtype = _dtype_name(tensor.type, schema)
        if output.integer:
            return dtype == output.dtype
        quantized = tensor.quantization is not None and len(tensor.quantization.scale or ()) > 0
        return dtype == "float32" or quantized

    order = []
    for output in outputs:
        candidates = [i for i, entry in enumerate(entries) if fits(entry, output)]
        if len(candidates) != 1:
            raise CsiDeployError(
                f"cannot tell which converted output is {output.name!r} "
                f"({len(candidates)} outputs of shape {output.shape} and dtype {output.dtype})"
            )
        order.append(candidates[0])
    if len(set(order)) != len(order):
        raise CsiDeployError("two encoder outputs match the same converted output")
    return order


def _to_integer_io(model: Any, schema: Any, float_outputs: Collection[int]) -> None:
    """Move the float boundary of a quantized graph to int8, in place.

    The input becomes the int8 tensor its QUANTIZE produces; each output at `float_outputs`
    (positions in the subgraph outputs) becomes the int8 tensor its DEQUANTIZE reads. A boundary
    op is removed when nothing else needs its float tensor, and kept otherwise (a dequantized
    output that also feeds float ops inside the graph).
    """
    graph = model.subgraphs[0]
    signature = model.signatureDefs[0]
    types = schema.TensorType

    def is_op(op: Any, builtin: int) -> bool:
        code = model.operatorCodes[op.opcodeIndex]
        return max(code.builtinCode, code.deprecatedBuiltinCode) == builtin

    def consumers(index: int) -> list[Any]:
        return [op for op in graph.operators if index in list(op.inputs)]

    def rename_float(index: int) -> None:
        tensor = graph.tensors[index]
        tensor.name = _as_bytes(tensor.name) + b"_float"

    index = int(graph.inputs[0])
    quantizers = [
        op
        for op in consumers(index)
        if is_op(op, schema.BuiltinOperator.QUANTIZE)
        and graph.tensors[op.outputs[0]].type == types.INT8
    ]
    if graph.tensors[index].type == types.FLOAT32 and quantizers:
        target = int(quantizers[0].outputs[0])
        graph.operators.remove(quantizers[0])
        if consumers(index):  # float ops still read the input: feed them its dequantized value
            op = schema.OperatorT()
            op.opcodeIndex = _opcode_index(model, schema, schema.BuiltinOperator.DEQUANTIZE)
            op.inputs, op.outputs = [target], [index]
            graph.operators.insert(0, op)
            rename_float(index)
        graph.inputs[0] = target
        _retarget(signature.inputs, index, target)
    for position in float_outputs:
        index = int(graph.outputs[position])
        producer = next((op for op in graph.operators if index in list(op.outputs)), None)
        if (
            graph.tensors[index].type != types.FLOAT32
            or producer is None
            or not is_op(producer, schema.BuiltinOperator.DEQUANTIZE)
            or graph.tensors[producer.inputs[0]].type != types.INT8
        ):
            continue
        source = int(producer.inputs[0])
        graph.outputs[position] = source
        _retarget(signature.outputs, index, source)
        if consumers(index):
            rename_float(index)
        else:
            graph.operators.remove(producer)
    _drop_unused_tensors(model)


def _drop_unused_tensors(model: Any) -> None:
    """Remove tensors that no op, graph input or output refers to, renumbering the rest."""
    graph = model.subgraphs[0]
    used = {int(i) for i in (*graph.inputs, *graph.outputs)}
    for op in graph.operators:
        for indices in (op.inputs, op.outputs, op.intermediates):
            used.update(int(i) for i in (indices if indices is not None else ()) if i >= 0)
    keep = sorted(used)
    new = {old: position for position, old in enumerate(keep)}

    def remap(indices: Any) -> Any:
        if indices is None:
            return None
        return [new[int(i)] if i >= 0 else int(i) for i in indices]

    graph.tensors = [graph.tensors[i] for i in keep]
    for op in graph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        op.intermediates = remap(op.intermediates)
    graph.inputs, graph.outputs = remap(graph.inputs), remap(graph.outputs)
    for entry in (*model.signatureDefs[0].inputs, *model.signatureDefs[0].outputs):
        entry.tensorIndex = new[int(entry.tensorIndex)]


def _add_float_io(model: Any, schema: Any, float_outputs: Collection[int] | None = None) -> None:
    """Put QUANTIZE before an int8 input and DEQUANTIZE after an int8 output, in place.

    Only outputs at `float_outputs` (positions in the subgraph outputs; all when None) are
    wrapped: an integer output of the encoder keeps its raw values. The new float tensors take
    over the boundary names; the int8 ones get an `_int8` suffix.
    """
    graph = model.subgraphs[0]
    signature = model.signatureDefs[0]

    def float_twin(index: int) -> int:
        source = graph.tensors[index]
        twin = schema.TensorT()
        twin.shape = list(source.shape)
        twin.shapeSignature = None if source.shapeSignature is None else list(source.shapeSignature)
        twin.type = schema.TensorType.FLOAT32
        twin.buffer = 0
        twin.name = source.name
        source.name = _as_bytes(source.name) + b"_int8"
        graph.tensors.append(twin)
        return len(graph.tensors) - 1

    def operator(builtin: int, source: int, target: int) -> Any:
        op = schema.OperatorT()
        op.opcodeIndex = _opcode_index(model, schema, builtin)
        op.inputs = [source]
        op.outputs = [target]
        return op

    def is_integer(index: int) -> bool:
        return graph.tensors[index].type == schema.TensorType.INT8

    for position, index in enumerate(graph.inputs):
        if not is_integer(index):
            continue
        twin = float_twin(index)
        graph.operators.insert(0, operator(schema.BuiltinOperator.QUANTIZE, twin, index))
        graph.inputs[position] = twin
        _retarget(signature.inputs, index, twin)
    for position, index in enumerate(graph.outputs):
        if not is_integer(index) or (float_outputs is not None and position not in float_outputs):
            continue
        twin = float_twin(index)
        graph.operators.append(operator(schema.BuiltinOperator.DEQUANTIZE, index, twin))
        graph.outputs[position] = twin
        _retarget(signature.outputs, index, twin)


def _retarget(tensor_maps: list[Any], old: int, new: int) -> None:
    for entry in tensor_maps:
        if entry.tensorIndex == old:
            entry.tensorIndex = new


def _opcode_index(model: Any, schema: Any, builtin: int) -> int:
    """Index of the operator code for `builtin` (int8 version 2), added when absent."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(
        builtin, schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    )
    code.version = 2
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _rename_signature(model: Any, config: TfliteExportConfig) -> None:
    """Name the signature's input and outputs (and their tensors) as the config says; the
    outputs are already in torch order."""
    signature = model.signatureDefs[0]
    graph = model.subgraphs[0]
    signature.signatureKey = SIGNATURE_KEY
    names = [(signature.inputs[0], config.input_name)]
    names += list(zip(signature.outputs, config.names, strict=True))
    for entry, name in names:
        entry.name = name
        graph.tensors[entry.tensorIndex].name = name


# --- helpers --------------------------------------------------------------------------------


def _tensor_spec(graph: Any, entry: Any, schema: Any) -> TensorSpec:
    tensor = graph.tensors[entry.tensorIndex]
    dtype = _dtype_name(tensor.type, schema)
    scale = zero_point = None
    quantization = tensor.quantization
    if dtype != "float32" and quantization is not None and len(quantization.scale or ()):
        scale = float(quantization.scale[0])
        zero_point = int(quantization.zeroPoint[0])
    return TensorSpec(
        name=_as_bytes(entry.name).decode(),
        shape=tuple(int(d) for d in tensor.shape),
        dtype=dtype,
        scale=scale,
        zero_point=zero_point,
    )


def _dtype_name(tensor_type: int, schema: Any) -> str:
    for name, value in vars(schema.TensorType).items():
        if value == tensor_type and not name.startswith("_"):
            return name.lower()
    return f"type{tensor_type}"


def _op_name(model: Any, op: Any, schema: Any) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return _as_bytes(code.customCode).decode()
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    for name, value in vars(schema.BuiltinOperator).items():
        if value == builtin and not name.startswith("_"):
            return name
    return f"BUILTIN_{builtin}"


def _as_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode()


def _check_contract(
    info: TfliteGraphInfo,
    config: TfliteExportConfig,
    path: Path,
    outputs: Sequence[_TorchOutput],
) -> None:
    """The written file must have the input, output names, order, dtypes and shapes promised:
    the input and float outputs in `config.io_dtype`, integer outputs in the dtype torch
    produced and without a scale."""
    problems = []
    hint = ""
    if config.io_dtype == "int8":
        hint = " (a boundary op stayed float; io='float' keeps float I/O around int8 kernels)"
    if info.input.dtype != config.io_dtype:
        problems.append(f"input dtype {info.input.dtype}, expected {config.io_dtype}{hint}")
    if info.input.shape != config.input_shape:
        problems.append(f"input shape {info.input.shape}, expected {config.input_shape}")
    names = tuple(spec.name for spec in info.outputs)
    if names != config.names:
        problems.append(f"outputs {list(names)}, expected {list(config.names)}")
    else:
        for spec, output in zip(info.outputs, outputs, strict=True):
            problems += _output_problems(spec, output, config.io_dtype, hint)
    if problems:
        raise CsiDeployError(f"{path}: converted file breaks its contract: {'; '.join(problems)}")


def _output_problems(spec: TensorSpec, output: _TorchOutput, io_dtype: str, hint: str) -> list[str]:
    problems = []
    expected = output.dtype if output.integer else io_dtype
    if spec.dtype != expected:
        problems.append(
            f"output {spec.name!r} dtype {spec.dtype}, expected {expected}"
            + ("" if output.integer else hint)
        )
    if output.integer and spec.scale is not None:
        problems.append(f"integer output {spec.name!r} carries a quantization scale")
    if spec.shape != output.shape:
        problems.append(f"output {spec.name!r} shape {spec.shape}, expected {output.shape}")
    return problems


def _write_atomic(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write `data` to a temporary sibling directory, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = staging / path.name
        staged.write_bytes(data)
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_identifier(key: str, name: str) -> None:
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise ValueError(f"{key} must be a non-empty identifier, got {name!r}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
