"""TFLite export of a UE encoder for mobile CPUs: fp32, dynamic-range INT8, full-integer INT8.

Conversion goes through litert-torch. Quantization uses its PT2E quantizer (per-channel
symmetric int8 weights, per-tensor affine int8 activations) on a `torch.export` graph:

- ``int8``: static, full integer. The prepared graph is calibrated on the given CSI (the
  same array the ONNX path calibrates with); the converter then emits int8 kernels end to
  end, and folds the quantization of the model input and output into the I/O tensors, so
  the file takes and returns int8 with a recorded scale and zero point. With
  ``io="float"`` the file gets a QUANTIZE op in front and a DEQUANTIZE op behind
  instead (a flatbuffer edit; the integer graph is the same), for callers that keep float
  buffers. Should a converter release hand back float I/O, ``io="int8"`` moves it to int8
  with LiteRT's own `modify_model_interface`.
- ``dynamic``: dynamic-range; int8 weights, float activations quantized on the fly by the
  hybrid kernels. No calibration.
- ``fp32``: plain float.

Every file is single-signature ``serving_default`` with one input (`input_name`, default
``csi``) and one output (`output_name`, default ``codeword``), fixed batch 1. ``layout="nhwc"``
wraps the encoder with a permute so that the handset feeds (1, 32, 32, 2) channel-last
buffers; the converter cancels the permute against its own layout transposes.

litert-torch, torchao and ai-edge-litert are imported only when a conversion runs: a missing
``tflite`` extra surfaces as `MissingDependencyError`, never as an import failure elsewhere.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
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
    """

    precision: str
    io: str = "int8"
    layout: str = "nchw"
    input_name: str = "csi"
    output_name: str = "codeword"
    calibration_batch: int = 64

    def __post_init__(self) -> None:
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("io", self.io, IO_TYPES)
        _check_choice("layout", self.layout, LAYOUTS)
        for key in ("input_name", "output_name"):
            name = getattr(self, key)
            if not name or not name.replace("_", "").isalnum():
                raise ValueError(f"{key} must be a non-empty identifier, got {name!r}")
        if self.input_name == self.output_name:
            raise ValueError("input_name and output_name must differ")
        if self.calibration_batch < 1:
            raise ValueError(f"calibration_batch must be >= 1, got {self.calibration_batch}")

    @property
    def io_dtype(self) -> str:
        """The dtype of the file's input and output tensors."""
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
    output: TensorSpec
    ops: tuple[str, ...]
    op_count: int
    float_ops: tuple[str, ...]
    weight_dtypes: tuple[str, ...]


@dataclass(frozen=True)
class TfliteArtifact:
    """A written `.tflite` encoder and its contract."""

    path: Path
    precision: str
    layout: str
    io_dtype: str
    input: TensorSpec
    output: TensorSpec
    ops: tuple[str, ...]
    op_count: int
    float_ops: tuple[str, ...]
    weight_dtypes: tuple[str, ...]
    num_bytes: int
    sha256: str
    calibration_samples: int | None
    conversion_seconds: float
    converter: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the path as a string)."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["input"] = self.input.to_dict()
        data["output"] = self.output.to_dict()
        return data


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
    calibration_batch: int = 64,
    overwrite: bool = False,
) -> TfliteArtifact:
    """Convert `encoder` (NCHW (N, 2, 32, 32) -> (N, M)) to a `.tflite` file at `out_path`.

    `calibration` (NCHW float CSI, whatever `layout` is) is required for ``int8`` and unused
    otherwise. The file is written to a temporary sibling and renamed into place.
    """
    config = TfliteExportConfig(
        precision=precision,
        io=io,
        layout=layout,
        input_name=input_name,
        output_name=output_name,
        calibration_batch=calibration_batch,
    )
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path} exists; pass overwrite=True to replace it")
    if config.precision == "int8":
        calibration = _check_calibration(calibration)
    litert = _import_litert()

    module = _Boundary(_frozen_copy(encoder), nhwc=config.layout == "nhwc").eval()
    sample = torch.rand(config.input_shape, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    model_bytes = _convert(litert, module, sample, config, calibration)
    model_bytes = _set_interface(litert, model_bytes, config)
    seconds = time.perf_counter() - started
    info = _inspect_bytes(model_bytes, str(out_path))
    _check_contract(info, config, out_path)
    _write_atomic(out_path, model_bytes, overwrite=overwrite)
    return TfliteArtifact(
        path=out_path,
        precision=config.precision,
        layout=config.layout,
        io_dtype=config.io_dtype,
        input=info.input,
        output=info.output,
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
    if len(signature.inputs) != 1 or len(signature.outputs) != 1:
        raise DataError(f"{path}: expected one signature input and one output")
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
        output=_tensor_spec(graph, signature.outputs[0], schema),
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

    def forward(self, csi: torch.Tensor) -> torch.Tensor:
        if self.nhwc:
            csi = csi.permute(0, 3, 1, 2)
        return self.encoder(csi)


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
        PT2EQuantizer=_concat_observing_quantizer(pt2e_quantizer.PT2EQuantizer),
        quantization_config=pt2e_quantizer.get_symmetric_quantization_config,
        QuantConfig=QuantConfig,
        prepare_pt2e=prepare_pt2e,
        convert_pt2e=convert_pt2e,
    )


def _concat_observing_quantizer(base: type) -> type:
    """litert-torch's PT2E quantizer, plus observers on every `cat` it leaves bare.

    Its `cat` annotator finds concatenations through source-function metadata that
    `torch.export` no longer records for `torch.cat`, so it annotates none. The converter still
    emits an int8 CONCATENATION, whose kernel needs one scale for all inputs, and gives it the
    first input's scale, which clips the others (CLNet's attention merge lost ~30 dB SQNR that
    way). Observing each input and the output lets the converter requantize every input to
    the output's range.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class ConcatObservingQuantizer(base):  # type: ignore[misc, valid-type]
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = super().annotate(model)
            config = self.global_config
            if config is None or config.input_activation is None:  # dynamic-range
                return model
            for node in model.graph.nodes:
                if node.op != "call_function" or node.target is not torch.ops.aten.cat.default:
                    continue
                if "quantization_annotation" in node.meta:
                    continue
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={
                        arg: config.input_activation
                        for arg in node.args[0]
                        if isinstance(arg, torch.fx.Node)
                    },
                    output_qspec=config.output_activation,
                    _annotated=True,
                )
            return model

    return ConcatObservingQuantizer


def _import_flatbuffer_tools() -> tuple[Any, Any]:
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError as error:
        raise MissingDependencyError(f"{TFLITE_EXTRA_MESSAGE} ({error})") from error
    return flatbuffer_utils, schema


@contextlib.contextmanager
def _quiet_converter(litert: SimpleNamespace) -> Iterator[None]:
    """Silence litert-torch's progress printing for the duration of a conversion."""
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    litert.config.show_progress = False
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


def _convert(
    litert: SimpleNamespace,
    module: nn.Module,
    sample: torch.Tensor,
    config: TfliteExportConfig,
    calibration: np.ndarray | None,
) -> bytes:
    """Flatbuffer bytes of `module` traced at `sample`, quantized as `config` asks."""
    with _quiet_converter(litert), torch.no_grad():
        if config.precision == "fp32":
            return bytes(litert.convert(module, (sample,)).model_content())
        quantizer = litert.PT2EQuantizer().set_global(
            litert.quantization_config(
                is_per_channel=True, is_dynamic=config.precision == "dynamic"
            )
        )
        if config.precision == "dynamic":
            # Activations are quantized at run time; one pass records the weight ranges.
            graph = torch.export.export(module, (sample,)).module()
            prepared = litert.prepare_pt2e(graph, quantizer)
            prepared(sample)
        else:
            assert calibration is not None
            samples = _to_layout(calibration, config)
            prepared = _calibrated(litert, module, quantizer, samples, config)
        quantized = litert.convert_pt2e(prepared, fold_quantize=False)
        # Traced from an eval-mode module, the graph already has eval semantics; exported
        # GraphModules refuse .eval(), so set the flag the converter checks.
        quantized.training = False
        edge = litert.convert(
            quantized, (sample,), quant_config=litert.QuantConfig(pt2e_quantizer=quantizer)
        )
        return bytes(edge.model_content())


def _calibrated(
    litert: SimpleNamespace,
    module: nn.Module,
    quantizer: Any,
    calibration: torch.Tensor,
    config: TfliteExportConfig,
) -> nn.Module:
    """The PT2E-prepared graph after its observers have seen every calibration sample.

    The graph is exported with a dynamic batch so that calibration runs in chunks; an encoder
    whose graph cannot be traced that way is calibrated one sample at a time.
    """
    chunk = config.calibration_batch
    try:
        batch = torch.export.Dim("batch", min=1, max=max(chunk, 2))
        graph = torch.export.export(module, (calibration[:2],), dynamic_shapes=({0: batch},))
    except Exception:  # any tracing failure: fall back to the batch-1 graph
        graph = torch.export.export(module, (calibration[:1],))
        chunk = 1
    prepared = litert.prepare_pt2e(graph.module(), quantizer)
    for start in range(0, len(calibration), chunk):
        prepared(calibration[start : start + chunk])
    return prepared


def _to_layout(calibration: np.ndarray, config: TfliteExportConfig) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(calibration, dtype=np.float32))
    if config.layout == "nhwc":
        tensor = tensor.permute(0, 2, 3, 1).contiguous()
    if len(tensor) == 1:  # the dynamic-batch trace needs two samples
        tensor = tensor.repeat(2, 1, 1, 1)
    return tensor


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
    litert: SimpleNamespace, model_bytes: bytes, config: TfliteExportConfig
) -> bytes:
    """Give the file the I/O dtype and the signature names that `config` promises."""
    flatbuffer_utils, schema = _import_flatbuffer_tools()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    graph = model.subgraphs[0]
    boundary = (graph.inputs[0], graph.outputs[0])
    integer_io = all(graph.tensors[i].type == schema.TensorType.INT8 for i in boundary)
    if config.io_dtype == "int8" and not integer_io:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(_to_integer_io(model_bytes)))
        # The tool renumbers tensors but leaves the signature pointing at the old indices.
        graph = model.subgraphs[0]
        model.signatureDefs[0].inputs[0].tensorIndex = graph.inputs[0]
        model.signatureDefs[0].outputs[0].tensorIndex = graph.outputs[0]
    _rename_signature(model, config)
    if config.io_dtype == "float32":
        _add_float_io(model, schema)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _to_integer_io(model_bytes: bytes) -> bytes:
    """Drop the boundary QUANTIZE / DEQUANTIZE of a float-I/O quantized file (LiteRT's tool)."""
    from ai_edge_litert import _pywrap_modify_model_interface as modify

    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp, "in.tflite"), Path(tmp, "out.tflite")
        source.write_bytes(model_bytes)
        int8 = 9  # TensorType.INT8
        status = modify.modify_model_interface(str(source), str(target), int8, int8)
        if status != 0 or not target.is_file():
            raise CsiDeployError(
                f"could not give the INT8 file int8 input/output (modify_model_interface: {status})"
            )
        return target.read_bytes()


def _add_float_io(model: Any, schema: Any) -> None:
    """Put QUANTIZE before an int8 input and DEQUANTIZE after an int8 output, in place.

    The new float tensors take over the boundary names; the int8 ones get an `_int8` suffix.
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
        if not is_integer(index):
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
    """Name the signature's input and output (and their tensors) as the config says."""
    signature = model.signatureDefs[0]
    graph = model.subgraphs[0]
    signature.signatureKey = SIGNATURE_KEY
    names = ((signature.inputs[0], config.input_name), (signature.outputs[0], config.output_name))
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


def _check_contract(info: TfliteGraphInfo, config: TfliteExportConfig, path: Path) -> None:
    """The written file must have the I/O dtype and input shape the config promises."""
    problems = []
    if info.input.dtype != config.io_dtype or info.output.dtype != config.io_dtype:
        hint = ""
        if config.io_dtype == "int8":
            hint = " (a boundary op stayed float; io='float' keeps float I/O around int8 kernels)"
        problems.append(
            f"I/O dtype {info.input.dtype}/{info.output.dtype}, expected {config.io_dtype}{hint}"
        )
    if info.input.shape != config.input_shape:
        problems.append(f"input shape {info.input.shape}, expected {config.input_shape}")
    if problems:
        raise CsiDeployError(f"{path}: converted file breaks its contract: {'; '.join(problems)}")


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


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
