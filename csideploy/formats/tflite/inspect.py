"""What a `.tflite` file holds, read from its flatbuffer: signature tensors, ops, weight dtypes."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from csideploy.errors import DataError, MissingDependencyError
from csideploy.formats.tflite.config import TFLITE_EXTRA_MESSAGE

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




def inspect_tflite(path: str | os.PathLike[str]) -> TfliteGraphInfo:
    """Read the signature tensors, operator names and weight dtypes of a `.tflite` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"TFLite model not found: {path}")
    return inspect_bytes(path.read_bytes(), str(path))


def inspect_bytes(data: bytes, path: str) -> TfliteGraphInfo:
    flatbuffer_utils, schema = import_flatbuffer_tools()
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
                weight_dtypes.add(dtype_name(graph.tensors[index].type, schema))
    return TfliteGraphInfo(
        input=_tensor_spec(graph, signature.inputs[0], schema),
        outputs=tuple(_tensor_spec(graph, entry, schema) for entry in signature.outputs),
        ops=tuple(sorted(set(op_names))),
        op_count=len(op_names),
        float_ops=tuple(sorted(float_ops)),
        weight_dtypes=tuple(sorted(weight_dtypes)),
    )


# --- conversion -----------------------------------------------------------------------------


def import_flatbuffer_tools() -> tuple[Any, Any]:
    try:
        from ai_edge_litert import schema_py_generated as schema
        from ai_edge_litert.tools import flatbuffer_utils
    except ImportError as error:
        raise MissingDependencyError(f"{TFLITE_EXTRA_MESSAGE} ({error})") from error
    return flatbuffer_utils, schema



def _tensor_spec(graph: Any, entry: Any, schema: Any) -> TensorSpec:
    tensor = graph.tensors[entry.tensorIndex]
    dtype = dtype_name(tensor.type, schema)
    scale = zero_point = None
    quantization = tensor.quantization
    if dtype != "float32" and quantization is not None and len(quantization.scale or ()):
        scale = float(quantization.scale[0])
        zero_point = int(quantization.zeroPoint[0])
    return TensorSpec(
        name=as_bytes(entry.name).decode(),
        shape=tuple(int(d) for d in tensor.shape),
        dtype=dtype,
        scale=scale,
        zero_point=zero_point,
    )


def dtype_name(tensor_type: int, schema: Any) -> str:
    for name, value in vars(schema.TensorType).items():
        if value == tensor_type and not name.startswith("_"):
            return name.lower()
    return f"type{tensor_type}"


def _op_name(model: Any, op: Any, schema: Any) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    if code.customCode:
        return as_bytes(code.customCode).decode()
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    for name, value in vars(schema.BuiltinOperator).items():
        if value == builtin and not name.startswith("_"):
            return name
    return f"BUILTIN_{builtin}"


def as_bytes(value: str | bytes | None) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else value.encode()

