"""Flatbuffer edits that give a converted file the interface its config promises.

Output order (torch order, in the signature and the subgraph), the int8 or float boundary
(QUANTIZE / DEQUANTIZE ops in front of and behind an integer graph) and the signature names.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from types import SimpleNamespace
from typing import Any

from csideploy.errors import CsiDeployError
from csideploy.formats.tflite.config import SIGNATURE_KEY, TfliteExportConfig, TorchOutput
from csideploy.formats.tflite.inspect import as_bytes, dtype_name, import_flatbuffer_tools


def set_interface(
    litert: SimpleNamespace,
    model_bytes: bytes,
    config: TfliteExportConfig,
    outputs: Sequence[TorchOutput] | None = None,
) -> bytes:
    """Give the file the output order, I/O dtype and signature names that `config` promises.

    `outputs` describe the torch encoder's outputs; without them every output of the file is
    taken as float, in the file's order.
    """
    flatbuffer_utils, schema = import_flatbuffer_tools()
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
) -> tuple[TorchOutput, ...]:
    """Every signature output of a file taken as a float output, in the file's order."""
    graph = model.subgraphs[0]
    entries = model.signatureDefs[0].outputs
    if len(entries) != len(config.names):
        raise CsiDeployError(
            f"the file has {len(entries)} outputs, the config names {len(config.names)}"
        )
    return tuple(
        TorchOutput(name, "float32", tuple(int(d) for d in graph.tensors[entry.tensorIndex].shape))
        for name, entry in zip(config.names, entries, strict=True)
    )


def _order_outputs(model: Any, outputs: Sequence[TorchOutput], schema: Any) -> None:
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


def _match_by_name(entries: list[Any], outputs: Sequence[TorchOutput]) -> list[int] | None:
    """For each torch output, the index of the file output named after it, or None."""
    names = [as_bytes(entry.name).decode() for entry in entries]
    for wanted in (
        [f"output_{k}" for k in range(len(outputs))],
        [output.name for output in outputs],
    ):
        if sorted(names) == sorted(wanted):
            return [names.index(name) for name in wanted]
    return None


def _match_by_tensor(
    graph: Any, entries: list[Any], outputs: Sequence[TorchOutput], schema: Any
) -> list[int]:
    """For each torch output, the one file output of its shape and kind (integer dtype or
    float-valued), or CsiDeployError when that does not single one out."""

    def fits(entry: Any, output: TorchOutput) -> bool:
        tensor = graph.tensors[entry.tensorIndex]
        if tuple(int(d) for d in tensor.shape) != output.shape:
            return False
        dtype = dtype_name(tensor.type, schema)
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
        tensor.name = as_bytes(tensor.name) + b"_float"

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
        source.name = as_bytes(source.name) + b"_int8"
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

