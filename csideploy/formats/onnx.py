"""ONNX export of one side of a split model: the UE encoder or the BS decoder, one file each.

Each side is exported on its own (`torch.onnx.export(..., dynamo=True)`), so the encoder graph
holds no decoder node or weight and vice versa; the submodule is wrapped under its role name,
so every initializer of the encoder graph is named `encoder.*` and every one of the decoder
graph `decoder.*`. The batch axis is dynamic (`dynamic_shapes`), the file is self-contained
(`external_data=False`) and the tensors are named: encoder `csi` -> `codeword`, decoder
`codeword` -> `csi_hat`.

Why the dynamo exporter: its graph is already optimised by onnxscript (BatchNorm folded into
the convolutions, no Identity or constant-folding leftovers), and its output is reproducible
once the provenance it records is removed. That provenance (a Python stack trace with file
paths on every node, FX node names, class hierarchies) is stripped by `canonicalize`, which
also replaces doc strings and producer fields and writes the project's `metadata_props`
sorted by key: two exports of the same weights are byte-identical.

The exporter emits opset 18 natively; lower opsets go through a version converter that may
silently keep 18, so the produced opset is checked and anything below 17 is refused.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import io
import logging
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from csideploy import __version__
from csideploy.defaults import DEFAULT_OPSET
from csideploy.errors import CsiDeployError, ShapeError
from csideploy.formats.base import Format, register_format

MIN_OPSET = 17
MAX_OPSET = 23
BATCH_DIM = "batch"
ENCODER_IO = ("csi", "codeword")
DECODER_IO = ("codeword", "csi_hat")
PRODUCER = "csideploy"


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, shape (`batch` for the dynamic axis) and element type."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class OnnxGraphInfo:
    """What an ONNX file holds: its interface, ops, initializers, opset and metadata."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: Mapping[str, int]
    initializer_names: tuple[str, ...]
    opset: int
    metadata: Mapping[str, str]
    num_bytes: int
    sha256: str

    @property
    def op_types(self) -> tuple[str, ...]:
        return tuple(sorted(self.op_counts))


class _Boundary(nn.Module):
    """Holds the exported submodule under its role name, so weights keep a `role.` prefix."""

    def __init__(self, role: str, module: nn.Module) -> None:
        super().__init__()
        self.role = role
        self.add_module(role, module)

    def forward(self, x: torch.Tensor, side: torch.Tensor | None = None) -> Any:
        module = getattr(self, self.role)
        return module(x) if side is None else module(x, side)


def check_opset(opset: int) -> int:
    """Validate a requested opset (the exporter's native one is 18)."""
    if (
        isinstance(opset, bool)
        or not isinstance(opset, int)
        or not (MIN_OPSET <= opset <= MAX_OPSET)
    ):
        raise CsiDeployError(
            f"opset {opset!r} is not supported; choose {MIN_OPSET}..{MAX_OPSET} "
            f"(default {DEFAULT_OPSET})"
        )
    return opset


def export_onnx(
    module: nn.Module,
    path: str | os.PathLike[str],
    *,
    role: str,
    input_name: str,
    output_name: str,
    input_shape: Sequence[int],
    metadata: Mapping[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
    extra_inputs: Sequence[tuple[str, Sequence[int]]] = (),
    output_names: Sequence[str] | None = None,
) -> OnnxGraphInfo:
    """Export `module` ((N, *input_shape) -> (N, ...)) to a single-file ONNX graph at `path`.

    `role` ("encoder" or "decoder") prefixes the weight names and names the graph; `metadata`
    becomes the model's `metadata_props` (sorted). `extra_inputs` are further (name, shape)
    inputs after the first (a decoder's side information); `output_names` names a module that
    returns a tuple. The file is canonical (see `canonicalize`) and passes `onnx.checker`.
    """
    check_opset(opset)
    if role not in ("encoder", "decoder"):
        raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")
    if len(extra_inputs) > 1:
        raise ValueError(f"at most one extra input is supported, got {len(extra_inputs)}")
    wrapper = _Boundary(role, module).eval()
    generator = torch.Generator().manual_seed(0)
    shapes = [tuple(input_shape), *(tuple(shape) for _, shape in extra_inputs)]
    examples = tuple(torch.rand((2, *shape), generator=generator) for shape in shapes)
    batch = torch.export.Dim(BATCH_DIM)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            examples,
            dynamo=True,
            input_names=[input_name, *(name for name, _ in extra_inputs)],
            output_names=list(output_names) if output_names else [output_name],
            dynamic_shapes=tuple({0: batch} for _ in examples),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    model = program.model_proto
    produced = _default_opset(model)
    if produced != opset:
        raise CsiDeployError(
            f"the ONNX exporter could not produce opset {opset} for the {role} "
            f"(it produced {produced}); use --opset {MIN_OPSET}..{MAX_OPSET}"
        )
    name_nodes_by_module(model.graph)
    canonicalize(model, graph_name=role, metadata=metadata or {})
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()
    Path(path).write_bytes(data)
    return graph_info(model, data)


def name_nodes_by_module(graph: onnx.GraphProto) -> None:
    """Name every node `<module path>/<op type>` (e.g. `encoder.encoder2/Conv`).

    The exporter records each node's module scopes; the names it gives nodes (`node_Conv_135`)
    say nothing. A Conv inside a ConvBN block (folded or not) is named after the block. Repeated
    names get `_1`, `_2`, ... in graph order. Must run before `canonicalize` strips the scopes.
    """
    seen: Counter[str] = Counter()
    for node in graph.node:
        scopes = next(
            (p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"),
            None,
        )
        if scopes is None:
            continue
        try:
            path = [s for s in ast.literal_eval(scopes) if s][:-1]
        except (ValueError, SyntaxError):
            continue
        module = path[-1] if path else "graph"
        if node.op_type == "Conv" and module.endswith((".bn", ".conv")):
            module = module.rsplit(".", 1)[0]
        name = f"{module}/{node.op_type}"
        seen[name] += 1
        node.name = name if seen[name] == 1 else f"{name}_{seen[name] - 1}"


def canonicalize(
    model: onnx.ModelProto, *, graph_name: str, metadata: Mapping[str, str]
) -> onnx.ModelProto:
    """Make `model` reproducible: no provenance, fixed producer, sorted project metadata.

    Removes every doc string and every `metadata_props` entry below the model (stack traces
    with file paths, FX node names, tool stamps), names the graph, sets the producer to
    csideploy and writes `metadata` sorted by key. Works in place and returns `model`.
    """
    model.doc_string = ""
    model.producer_name = PRODUCER
    model.producer_version = __version__
    model.domain = ""
    graph = model.graph
    graph.name = graph_name
    _strip_graph(graph)
    for function in model.functions:
        function.doc_string = ""
        del function.metadata_props[:]
        _strip_nodes(function.node)
        for value in function.value_info:
            _strip_value(value)
    del model.metadata_props[:]
    for key in sorted(metadata):
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = str(metadata[key])
    return model


def _strip_graph(graph: onnx.GraphProto) -> None:
    graph.doc_string = ""
    del graph.metadata_props[:]
    _strip_nodes(graph.node)
    for value in (*graph.input, *graph.output, *graph.value_info):
        _strip_value(value)
    for tensor in graph.initializer:
        tensor.doc_string = ""
        del tensor.metadata_props[:]


def _strip_nodes(nodes: Sequence[onnx.NodeProto]) -> None:
    for node in nodes:
        node.doc_string = ""
        del node.metadata_props[:]
        for attribute in node.attribute:
            attribute.doc_string = ""
            if attribute.type == onnx.AttributeProto.GRAPH:
                _strip_graph(attribute.g)
            for subgraph in attribute.graphs:
                _strip_graph(subgraph)


def _strip_value(value: onnx.ValueInfoProto) -> None:
    value.doc_string = ""
    del value.metadata_props[:]


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress prints, registry warnings and deprecation noise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def graph_info(model: onnx.ModelProto, data: bytes | None = None) -> OnnxGraphInfo:
    """Interface, op counts, initializer names, opset and metadata of an in-memory model."""
    data = model.SerializeToString() if data is None else data
    return OnnxGraphInfo(
        inputs=tuple(_tensor_info(v) for v in model.graph.input),
        outputs=tuple(_tensor_info(v) for v in model.graph.output),
        op_counts=dict(sorted(Counter(node.op_type for node in model.graph.node).items())),
        initializer_names=tuple(t.name for t in model.graph.initializer),
        opset=_default_opset(model),
        metadata={p.key: p.value for p in model.metadata_props},
        num_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def inspect_onnx(path: str | os.PathLike[str]) -> OnnxGraphInfo:
    """`graph_info` of the ONNX file at `path`."""
    data = Path(path).read_bytes()
    return graph_info(onnx.load_from_string(data), data)


def _tensor_info(value: onnx.ValueInfoProto) -> TensorInfo:
    tensor = value.type.tensor_type
    shape = tuple(
        dim.dim_param if dim.dim_param else int(dim.dim_value) for dim in tensor.shape.dim
    )
    return TensorInfo(
        name=value.name,
        shape=shape,
        dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
    )


class OnnxRunner:
    """An onnxruntime CPU session on one file, with a fixed thread count."""

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: np.ndarray, *, batch_size: int = 500) -> np.ndarray:
        """The output for every row of `x`, batch by batch, as float32."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        expected = self.session.get_inputs()[0].shape[1:]
        if tuple(x.shape[1:]) != tuple(expected):
            raise ShapeError(
                f"{self.input_name}: {self.path.name} expects (N, "
                f"{', '.join(map(str, expected))}), got {x.shape}"
            )
        parts = [
            self.session.run([self.output_name], {self.input_name: x[i : i + batch_size]})[0]
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def run_outputs(self, *inputs: np.ndarray, batch_size: int = 500) -> list[np.ndarray]:
        """Every output (in graph order, dtypes as the file declares) for every row of the
        inputs (in graph order, float32), batch by batch."""
        specs = self.session.get_inputs()
        if len(inputs) != len(specs):
            raise ShapeError(
                f"{self.path.name} takes {len(specs)} inputs "
                f"({', '.join(s.name for s in specs)}), got {len(inputs)}"
            )
        arrays = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        for spec, x in zip(specs, arrays, strict=True):
            if tuple(x.shape[1:]) != tuple(spec.shape[1:]) or len(x) != len(arrays[0]):
                raise ShapeError(
                    f"{spec.name}: {self.path.name} expects (N, "
                    f"{', '.join(map(str, spec.shape[1:]))}), got {x.shape}"
                )
        names = [o.name for o in self.session.get_outputs()]
        chunks = [
            self.session.run(
                names, {s.name: x[i : i + batch_size] for s, x in zip(specs, arrays, strict=True)}
            )
            for i in range(0, len(arrays[0]), batch_size)
        ]
        return [np.concatenate([chunk[k] for chunk in chunks]) for k in range(len(names))]


register_format(
    Format(
        name="onnx",
        suffix=".onnx",
        runtime="onnxruntime",
        export=export_onnx,
        int8=("int8", "dynamic"),
    )
)
