"""The typed results of the export steps, and the context a format step reads.

A leaf of the pipeline: it imports no step, so that steps, format plug-ins and writers can all
use these types without importing each other.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from csideploy import __version__
from csideploy.formats.onnx import DECODER_IO, ENCODER_IO, TensorInfo
from csideploy.gates.numerics import FloatReference, GateResult, NmseConvention, Numerics
from csideploy.models.ue_graph import SideInput, UeGraph
from csideploy.pipeline.config import ExportConfig
from csideploy.quantize.diagnostics import LayerError
from csideploy.quantize.onnx_qdq import QuantizationParams
from csideploy.runner import LatencyResult


@dataclass(frozen=True)
class CheckpointSummary:
    """Where the weights came from."""

    label: str
    """The checkpoint file given, or the shipped default's name."""
    sha256: str
    source_format: str

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.label, "sha256": self.sha256, "source_format": self.source_format}


@dataclass(frozen=True)
class ModelSizes:
    params_encoder: int
    params_decoder: int
    macs_encoder: int
    macs_decoder: int

    def to_dict(self) -> dict[str, int]:
        return {
            "params_encoder": self.params_encoder,
            "params_decoder": self.params_decoder,
            "macs_encoder": self.macs_encoder,
            "macs_decoder": self.macs_decoder,
        }


@dataclass(frozen=True)
class SplitModel:
    """The two sides of the model: the float originals and export-ready copies.

    The export copies have every kernel-1 1-D convolution turned into the Linear layer it is
    (`linearized`), so it exports as Gemm and INT8 (static and dynamic) quantizes it as an FC
    layer; the float originals are what every artifact is compared with.
    """

    encoder: nn.Module
    decoder: nn.Module
    export_encoder: nn.Module
    export_decoder: nn.Module
    linearized: tuple[str, ...]
    sizes: ModelSizes
    input_shape: tuple[int, ...]
    codeword_length: int
    folded: tuple[str, ...] = ()
    """BatchNorms folded into their convolution in the export copy (`conv <- bn`)."""
    not_folded: tuple[str, ...] = ()
    ue_graph: UeGraph | None = None
    """Integer-codeword models: the handset graph that is exported instead of the encoder."""
    side_input: SideInput | None = None

    @property
    def output_names(self) -> tuple[str, ...]:
        return self.ue_graph.output_names if self.ue_graph else (ENCODER_IO[1],)

    @property
    def decoder_inputs(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(name, shape) of every decoder input: the codeword, then any side input."""
        inputs = [(DECODER_IO[0], (self.codeword_length,))]
        if self.side_input is not None:
            inputs.append((self.side_input.name, tuple(self.side_input.shape)))
        return tuple(inputs)


@dataclass(frozen=True)
class CsiSet:
    """A calibration or evaluation set and where it came from."""

    role: str
    source: str
    samples: int
    data: np.ndarray = field(repr=False, compare=False)
    seed: int | None = None
    method: str | None = None
    """Calibration method (calibration sets only)."""
    warning: str | None = None
    """Calibration sets only: why it may not fit the evaluation set."""
    side: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The paired uplink CSI, row for row (models whose decoder takes a side input)."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "samples": self.samples}
        if self.side is not None:
            out["paired_uplink"] = True
        if self.seed is not None:
            out["seed"] = self.seed
        if self.method is not None:
            out["method"] = self.method
        if self.warning is not None:
            out["warning"] = self.warning
        return out


@dataclass(frozen=True)
class ArtifactResult:
    """One written file and how it measures against the float model.

    `numerics.max_abs_error` is the codeword error for encoders and the reconstruction error
    for decoders. `float_ops` (quantized files only): op types ONNX Runtime still runs in
    float. `layers`: per-tensor SQNR, worst first (quantized files only).
    """

    path: Path
    format: str
    role: str
    side: str
    precision: str
    bytes: int
    sha256: str
    numerics: Numerics
    gates: tuple[GateResult, ...]
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    op_counts: Mapping[str, int] = field(default_factory=dict)
    float_ops: tuple[str, ...] | None = None
    quantization: QuantizationParams | None = None
    layers: tuple[LayerError, ...] = ()
    latency: LatencyResult | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    """Format-specific facts (TFLite: layout, I/O scale and zero point, ops)."""

    @property
    def file(self) -> str:
        return self.path.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "file": self.file,
            "format": self.format,
            "role": self.role,
            "side": self.side,
            "precision": self.precision,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "numerics": self.numerics.to_dict(),
            "gates": [g.to_dict() for g in self.gates],
            "op_counts": dict(self.op_counts),
            "float_ops": list(self.float_ops) if self.float_ops is not None else None,
            "quantization": self.quantization.to_dict() if self.quantization else None,
            "layers": [row.to_dict() for row in self.layers],
            "latency": self.latency.to_dict() if self.latency else None,
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class ExportResult:
    """What `run_export` made: the directory, every artifact, and how it was made."""

    model: str
    cr: int
    codeword_length: int
    out_dir: Path
    checkpoint: CheckpointSummary
    int8: str | None
    formats: tuple[str, ...]
    convention: NmseConvention
    float_nmse_db: float
    calibration: CsiSet | None
    evaluation: CsiSet
    artifacts: tuple[ArtifactResult, ...]
    sizes: ModelSizes
    linearized: tuple[str, ...]
    input_spec: Mapping[str, Any]
    codeword_spec: Mapping[str, Any]
    onnx_tolerance: float
    max_nmse_drop_db: float
    versions: Mapping[str, str]
    files: tuple[FileEntry, ...] = ()
    seconds: Mapping[str, float] = field(default_factory=dict)
    surgery: Mapping[str, Any] = field(default_factory=dict)

    def artifact(self, file: str) -> ArtifactResult:
        for artifact in self.artifacts:
            if artifact.file == file:
                return artifact
        raise KeyError(file)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite limits as "inf")."""
        return jsonable(
            {
                "model": self.model,
                "cr": self.cr,
                "codeword_length": self.codeword_length,
                "out_dir": str(self.out_dir),
                "checkpoint": self.checkpoint.to_dict(),
                "int8": self.int8,
                "formats": list(self.formats),
                "nmse_convention": {
                    "name": self.convention.name,
                    "description": self.convention.description,
                },
                "float_nmse_db": self.float_nmse_db,
                "calibration": self.calibration.to_dict() if self.calibration else None,
                "evaluation": self.evaluation.to_dict(),
                "limits": {
                    "onnx_max_abs_error": self.onnx_tolerance,
                    "max_nmse_drop_db": self.max_nmse_drop_db,
                },
                "sizes": self.sizes.to_dict(),
                "linearized": list(self.linearized),
                "input": dict(self.input_spec),
                "codeword": dict(self.codeword_spec),
                "artifacts": [a.to_dict() for a in self.artifacts],
                "files": [f.to_dict() for f in self.files],
                "versions": dict(self.versions),
                "seconds": dict(self.seconds),
                "surgery": dict(self.surgery),
            }
        )


@dataclass
class ExportContext:
    """What a format step needs: the config, the split model, the data and the reference."""

    config: ExportConfig
    model_name: str
    cr: int
    checkpoint: CheckpointSummary
    split: SplitModel
    calibration: CsiSet | None
    evaluation: CsiSet
    reference: FloatReference
    onnx_tolerance: float
    input_spec: Mapping[str, Any]
    staging: Path
    """Where the step writes its files (renamed to `out_dir` at the end)."""
    out_dir: Path
    scratch: Path
    """For intermediate files that are not shipped."""
    int8_plan: Any = None
    """The static INT8 layer plan, made once and shared by the formats (see
    `csideploy.pipeline.int8_onnx_step.layer_plan`)."""

    def final_path(self, file: str) -> Path:
        return self.out_dir / file

    def metadata(self, *, role: str, precision: str, **extra: str) -> dict[str, str]:
        """The `metadata_props` of an artifact."""
        input_name, output_name = ENCODER_IO if role == "encoder" else DECODER_IO
        if role == "encoder":
            output_name = ",".join(self.split.output_names)
        else:
            input_name = ",".join(name for name, _ in self.split.decoder_inputs)
        spec = self.input_spec
        data = {
            "model": self.model_name,
            "cr": str(self.cr),
            "role": role,
            "side": "UE" if role == "encoder" else "BS",
            "precision": precision,
            "input_name": input_name,
            "output_name": output_name,
            "codeword_length": str(self.split.codeword_length),
            "input_convention": (
                f"{spec['layout']} {spec['dtype']} ({', '.join(map(str, spec['shape']))}), "
                f"values in [{spec['value_range'][0]:g}, {spec['value_range'][1]:g}] with "
                f"{spec['zero_offset']:g} meaning zero: {spec['description']}"
            ),
            "checkpoint_sha256": self.checkpoint.sha256,
            "producer_version": f"csideploy {__version__}",
        }
        data.update(extra)
        return data


@dataclass(frozen=True)
class FileEntry:
    """One file of the export directory."""

    path: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "sha256": self.sha256}


def file_entry(path: Path, root: Path) -> FileEntry:
    data = path.read_bytes()
    return FileEntry(
        path=path.relative_to(root).as_posix(),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def jsonable(value: Any) -> Any:
    """`value` with inf as "inf" / "-inf", NaN as None, tuples as lists, paths as strings."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
