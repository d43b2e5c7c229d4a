"""The export recipe: a short sequence of small steps, each returning a typed result.

    load      checkpoint -> LoadedCheckpoint            (`load_step`)
    split     UE encoder | BS decoder, export-ready     (`split_step`)
    data      calibration and evaluation CSI            (`calibration_step`, `evaluation_step`)
    reference the float torch model on the eval set     (`reference_step`)
    formats   for each format: export float, quantize,  (`FORMAT_STEPS[name].export`)
              gate every artifact against the float model
    measure   a quick latency per artifact              (`measure_step`)
    write     numerics.json, report.md, manifest.json   (`write_step`)

`run_export(ExportConfig(...))` runs them all inside a staged output directory (see
`csideploy.export.writer.StagedOutput`): if any step fails, nothing is left at the target.

A format is a `FormatStep` registered in `FORMAT_STEPS` (`register_format`): its `export`
receives the `ExportContext` and returns `ArtifactResult` records for the files it wrote into
`context.staging`; its optional `latency` measures one of them. ONNX is built in.
"""

from __future__ import annotations

import math
import platform
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from torch import nn

from csideploy import __version__
from csideploy.errors import CsiDeployError, DataError, ToleranceError
from csideploy.export import (
    CALIBRATION_METHODS,
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_EVAL_SAMPLES,
    DEFAULT_MAX_FIDELITY_NMSE_DB,
    DEFAULT_MAX_NMSE_DROP_DB,
    DEFAULT_MIN_CODEWORD_SQNR_DB,
    DEFAULT_OPSET,
    INT8_LAYER_CHOICES,
    INT8_MODES,
    MIN_CALIB_SAMPLES,
    MIN_EVAL_SAMPLES,
)
from csideploy.export.numerics import (
    NMSE_CONVENTION,
    FloatReference,
    GateResult,
    NmseConvention,
    Numerics,
    check_levels,
    check_parity,
    decoder_numerics,
    encoder_numerics,
    float_reference,
)
from csideploy.export.onnx_export import (
    DECODER_IO,
    ENCODER_IO,
    OnnxGraphInfo,
    OnnxRunner,
    TensorInfo,
    check_opset,
    export_onnx,
)
from csideploy.export.quantize_onnx import LayerError, QuantizationParams
from csideploy.export.writer import (
    FileEntry,
    StagedOutput,
    check_output,
    file_entry,
    jsonable,
    write_reports,
)
from csideploy.models.ue_graph import SideInput, UeGraph, flat_codeword
from csideploy.quantize.calibration_data import check_calibration_set, mismatch_warning
from csideploy.runner import QUICK_RUNS as DEFAULT_RUNS
from csideploy.runner import LatencyResult, quick_latency

DEFAULT_OUT_ROOT = "artifacts"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ExportConfig:
    """Everything `csideploy export` can be told, validated up front.

    `int8`: None (float only), "static" (QDQ, calibrated) or "dynamic". `calib` / `eval_data`:
    a CSI file (.mat / .npy / .npz), or None for the built-in synthetic indoor sets (seeded,
    disjoint). `out`: None means `artifacts/<model>-cr<N>`. `max_nmse_drop`: the INT8 gate in
    dB (`math.inf` accepts anything).
    """

    model: str
    cr: int | None = None
    checkpoint: str | None = None
    int8: str | None = None
    calib: str | None = None
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    calib_method: str = "minmax"
    eval_data: str | None = None
    eval_samples: int = DEFAULT_EVAL_SAMPLES
    max_nmse_drop: float = DEFAULT_MAX_NMSE_DROP_DB
    min_codeword_sqnr: float = DEFAULT_MIN_CODEWORD_SQNR_DB
    """Fidelity gate: lowest codeword SQNR (dB) of an INT8 file against the float encoder."""
    max_fidelity_nmse: float = DEFAULT_MAX_FIDELITY_NMSE_DB
    """Fidelity gate: highest NMSE (dB) of an INT8 reconstruction against the float one."""
    int8_layers: str = "auto"
    """Static INT8: "auto" (layers chosen by measured speed and accuracy), "accuracy" (by
    accuracy only) or "all"."""
    opset: int = DEFAULT_OPSET
    out: str | None = None
    force: bool = False
    formats: tuple[str, ...] = ("onnx",)
    layout: str = "nchw"
    """TFLite input layout: "nchw" as the torch model, or "nhwc" for channel-last buffers."""
    tflite_io: str = "int8"
    """I/O dtype of the full-integer TFLite encoder: "int8" or "float"."""
    version: str = "0.1.0"
    """The bundle's artifact version (semver)."""
    hard_sigmoid: str | None = None
    """None, "encoder" or "all": replace sigmoids with relu6(x + 3) / 6 before export."""
    finetune_epochs: int = 0
    finetune_samples: int = 5000
    latency_runs: int = DEFAULT_RUNS
    convention: str = NMSE_CONVENTION

    def __post_init__(self) -> None:
        if self.int8 is not None and self.int8 not in INT8_MODES:
            modes = ", ".join(INT8_MODES)
            raise CsiDeployError(f"--int8 must be one of {modes}, got {self.int8!r}")
        if self.calib_method not in CALIBRATION_METHODS:
            raise CsiDeployError(
                f"--calib-method must be one of {', '.join(CALIBRATION_METHODS)}, "
                f"got {self.calib_method!r}"
            )
        if self.calib is not None and self.int8 != "static":
            raise CsiDeployError("--calib is only used by static INT8: add --int8 (static)")
        if self.int8 == "static" and _bad_count(self.calib_samples, MIN_CALIB_SAMPLES):
            raise DataError(
                f"calibration needs at least {MIN_CALIB_SAMPLES} samples, "
                f"got --calib-samples {self.calib_samples}"
            )
        if _bad_count(self.eval_samples, MIN_EVAL_SAMPLES):
            raise DataError(
                f"evaluation needs at least {MIN_EVAL_SAMPLES} samples, "
                f"got --eval-samples {self.eval_samples}"
            )
        if not self.max_nmse_drop >= 0:  # also catches NaN
            raise CsiDeployError(
                f"--max-nmse-drop must be >= 0 dB (or inf), got {self.max_nmse_drop}"
            )
        if self.int8_layers not in INT8_LAYER_CHOICES:
            raise CsiDeployError(
                f"--int8-layers must be one of {', '.join(INT8_LAYER_CHOICES)}, "
                f"got {self.int8_layers!r}"
            )
        if math.isnan(self.min_codeword_sqnr) or math.isnan(self.max_fidelity_nmse):
            raise CsiDeployError("--min-codeword-sqnr and --max-fidelity-nmse must be numbers")
        check_opset(self.opset)
        if not self.formats or len(set(self.formats)) != len(self.formats):
            raise CsiDeployError(f"formats must be distinct and non-empty, got {self.formats}")
        if self.hard_sigmoid not in (None, "encoder", "all"):
            raise CsiDeployError(
                f"--hard-sigmoid must be encoder or all, got {self.hard_sigmoid!r}"
            )
        if self.finetune_epochs and self.hard_sigmoid is None:
            raise CsiDeployError("--finetune-epochs needs --hard-sigmoid")
        if _bad_count(self.finetune_epochs, 0) or _bad_count(self.finetune_samples, 16):
            raise CsiDeployError("--finetune-epochs must be >= 0 and the samples >= 16")
        if self.layout not in ("nchw", "nhwc"):
            raise CsiDeployError(f"--layout must be nchw or nhwc, got {self.layout!r}")
        if self.tflite_io not in ("int8", "float"):
            raise CsiDeployError(f"--io must be int8 or float, got {self.tflite_io!r}")
        if not _SEMVER.match(self.version):
            raise CsiDeployError(f"--version must be semver (e.g. 1.0.0), got {self.version!r}")
        if self.latency_runs < 0:
            raise CsiDeployError(f"latency_runs must be >= 0, got {self.latency_runs}")

    def output_dir(self, cr: int) -> Path:
        return Path(self.out) if self.out else Path(DEFAULT_OUT_ROOT) / f"{self.model}-cr{cr}"


_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)


def _bad_count(value: int, minimum: int) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value < minimum


# --------------------------------------------------------------------------- step results


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
    `csideploy.export.int8_onnx_step.layer_plan`)."""

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
class FormatStep:
    """A registered format: `export(context)` -> artifacts; `latency(path, shape, runs)`."""

    name: str
    export: Callable[[ExportContext], list[ArtifactResult]]
    latency: Callable[[Path, Sequence[int], int], LatencyResult] | None = None


FORMAT_STEPS: dict[str, FormatStep] = {}


def encoder_precisions(config: ExportConfig) -> list[str]:
    """The encoder precisions a format step writes: fp32, plus int8 (static) or dynamic."""
    extra = {"static": ["int8"], "dynamic": ["dynamic"]}.get(config.int8 or "", [])
    return ["fp32", *extra]


def register_format(
    name: str, *, latency: Callable[[Path, Sequence[int], int], LatencyResult] | None = None
) -> Callable[[Callable[[ExportContext], list[ArtifactResult]]], Callable[..., Any]]:
    """Register `export(context) -> list[ArtifactResult]` as format `name`."""

    def decorate(
        export: Callable[[ExportContext], list[ArtifactResult]],
    ) -> Callable[[ExportContext], list[ArtifactResult]]:
        FORMAT_STEPS[name] = FormatStep(name=name, export=export, latency=latency)
        return export

    return decorate


# --------------------------------------------------------------------------- steps


def load_step(config: ExportConfig) -> tuple[Any, CheckpointSummary]:
    """Load the model: the given checkpoint, or the shipped default for (model, CR)."""
    from csideploy.models.checkpoint import load_model
    from csideploy.models.registry import get_entry

    get_entry(config.model)
    loaded = load_model(config.model, cr=config.cr, checkpoint=config.checkpoint)
    label = Path(config.checkpoint).name if config.checkpoint else _default_label(loaded)
    return loaded, CheckpointSummary(
        label=label, sha256=loaded.sha256, source_format=str(loaded.source_format)
    )


def _default_label(loaded: Any) -> str:
    metadata = getattr(loaded, "metadata", None) or {}
    path = metadata.get("path") if isinstance(metadata, Mapping) else None
    return f"shipped default {Path(path).name}" if path else "shipped default"


def split_step(model: nn.Module) -> SplitModel:
    """UE encoder and BS decoder as separate float modules, plus export-ready copies.

    The export copy of a float-codeword encoder has its BatchNorms folded into the
    convolutions and its kernel-1 Conv1d layers turned into Linear; an integer-codeword model
    exports its handset graph (`UeGraph`) instead.
    """
    import torch

    from csideploy.models.registry import get_entry
    from csideploy.models.stats import count_macs, count_params
    from csideploy.transforms import fold_batchnorm_report, linearize_pointwise_convs

    encoder, decoder = model.encoder.eval(), model.decoder.eval()
    entry = get_entry(model.model_name)
    input_shape = tuple(entry.input_spec.shape)
    with torch.no_grad():
        codeword = encoder(torch.zeros(1, *input_shape))
    if codeword.dim() != 2:
        raise CsiDeployError(
            f"{model.model_name}: the encoder must return a flat (N, M) codeword, "
            f"got shape {tuple(codeword.shape)}"
        )
    graph = entry.ue_graph(model) if entry.ue_graph is not None else None
    folded: tuple[str, ...] = ()
    not_folded: tuple[str, ...] = ()
    if graph is not None:
        export_encoder, enc_replaced = graph.module.eval(), ()
    else:
        fold = fold_batchnorm_report(encoder)
        folded = tuple(f"encoder.{p.conv} <- encoder.{p.bn}" for p in fold.folded)
        not_folded = tuple(f"encoder.{n.path}: {n.reason}" for n in fold.not_folded) + tuple(
            f"encoder.{path}: per-delay affine, kept as a multiply-add" for path in fold.converted
        )
        enc = linearize_pointwise_convs(fold.module)
        export_encoder, enc_replaced = enc.module.eval(), enc.replaced
    dec = linearize_pointwise_convs(decoder)
    side = entry.side_input
    decoder_example = [torch.zeros_like(codeword)]
    if side is not None:
        decoder_example.append(torch.zeros(1, *side.shape))
    sizes = ModelSizes(
        params_encoder=count_params(encoder),
        params_decoder=count_params(decoder),
        macs_encoder=count_macs(encoder, torch.zeros(1, *input_shape)),
        macs_decoder=count_macs(decoder, *decoder_example),
    )
    return SplitModel(
        encoder=encoder,
        decoder=decoder,
        export_encoder=export_encoder,
        export_decoder=dec.module.eval(),
        linearized=tuple(f"encoder.{n}" for n in enc_replaced)
        + tuple(f"decoder.{n}" for n in dec.replaced),
        sizes=sizes,
        input_shape=input_shape,
        codeword_length=int(codeword.shape[1]),
        folded=folded,
        not_folded=not_folded,
        ue_graph=graph,
        side_input=side,
    )


def surgery_step(
    config: ExportConfig, model: nn.Module, evaluation: CsiSet
) -> tuple[nn.Module, dict[str, Any]]:
    """Hard-sigmoid substitution (and its optional fine-tune), with the NMSE before and after."""
    if config.hard_sigmoid is None:
        return model, {}
    from csideploy.calibration.synthetic import generate
    from csideploy.transforms import hard_sigmoid_study

    train_x = None
    if config.finetune_epochs:
        train_x = generate(config.finetune_samples, scenario="indoor", seed=FINETUNE_SEED)
    study = hard_sigmoid_study(
        model,
        evaluation.data,
        train_x=train_x,
        finetune_epochs=config.finetune_epochs,
        scope=config.hard_sigmoid,
        convention=config.convention,
    )
    summary = {
        "hard_sigmoid": {
            "scope": study.scope,
            "replaced": list(study.replaced),
            "nothing_to_replace": study.nothing_to_replace,
            "nmse_convention": study.convention,
            "eval_samples": study.n_eval,
            "nmse_before_db": study.nmse_before_db,
            "nmse_after_db": study.nmse_after_db,
            "nmse_finetuned_db": study.nmse_finetuned_db,
            "finetune_epochs": study.finetune_epochs,
            "finetune_samples": study.finetune_samples,
            "finetune_data": f"synthetic indoor (seed {FINETUNE_SEED})"
            if train_x is not None
            else None,
        }
    }
    return (study.model if study.model is not None else model), summary


FINETUNE_SEED = 3003
"""Seed of the synthetic training set for `--finetune-epochs` (disjoint from calib / eval)."""


def calibration_step(config: ExportConfig, evaluation: CsiSet | None = None) -> CsiSet | None:
    """The calibration set (static INT8 only): `--calib`, else the samples of the `--eval` file
    after the evaluation ones (same source, disjoint), else synthetic indoor CSI. A degenerate
    set is refused; one whose spread differs strongly from `evaluation` warns
    (`CalibrationWarning`, also recorded in the set)."""
    if config.int8 != "static":
        return None
    if config.calib is None and config.eval_data is not None:
        csi = _calibration_after_evaluation(config)
    else:
        csi = _csi_set(
            "calibration", config.calib, config.calib_samples, MIN_CALIB_SAMPLES, "--calib-samples"
        )
    check_calibration_set(csi.data, csi.source)
    warning = None
    if evaluation is not None:
        warning = mismatch_warning(csi.data, csi.source, evaluation.data, evaluation.source)
        if warning:
            warnings.warn(warning, CalibrationWarning, stacklevel=2)
    return replace(csi, method=config.calib_method, warning=warning)


def _calibration_after_evaluation(config: ExportConfig) -> CsiSet:
    """Calibration samples from the `--eval` file, after the first `--eval-samples`."""
    from csideploy.calibration.io import load_csi

    assert config.eval_data is not None
    data = load_csi(config.eval_data)
    rest = data[config.eval_samples : config.eval_samples + config.calib_samples]
    if len(rest) < MIN_CALIB_SAMPLES:
        raise DataError(
            f"--eval file {config.eval_data} holds {len(data)} samples: after the "
            f"{config.eval_samples} evaluation samples {len(rest)} remain for calibration, "
            f"fewer than {MIN_CALIB_SAMPLES}; pass --calib or lower --eval-samples"
        )
    first = config.eval_samples
    source = (
        f"{config.eval_data} (samples {first}-{first + len(rest) - 1}, after the evaluation set)"
    )
    return CsiSet(role="calibration", source=source, samples=len(rest), data=rest)


class CalibrationWarning(UserWarning):
    """The calibration set looks unlike the evaluation set."""


def evaluation_step(config: ExportConfig, side_input: SideInput | None = None) -> CsiSet:
    """The evaluation set for every gate: `--eval` file or synthetic indoor CSI.

    A model whose decoder takes the uplink CSI (`side_input`) is evaluated on paired data: a
    `--eval` file holding `HT` and `HT_UL`, or the built-in paired generator.
    """
    if side_input is not None:
        return _paired_set(config.eval_data, config.eval_samples)
    return _csi_set(
        "evaluation", config.eval_data, config.eval_samples, MIN_EVAL_SAMPLES, "--eval-samples"
    )


def _paired_set(path: str | None, samples: int) -> CsiSet:
    from csideploy.calibration import paired, synthetic

    if path is None:
        seed = synthetic.EVALUATION_SEED
        dl, ul = paired.generate_paired(samples, scenario="indoor", seed=seed)
        source = f"synthetic indoor, paired UL/DL (seed {seed})"
        return CsiSet("evaluation", source, len(dl), dl, seed=seed, side=ul)
    try:
        dl, ul = paired.load_paired(path, limit=samples)
    except DataError as error:
        raise DataError(
            f"this model's decoder takes the uplink CSI, so --eval must be a paired file "
            f"(variables {paired.DL_VARIABLE} and {paired.UL_VARIABLE}; make one with "
            f"`csideploy data synth --paired`): {error}"
        ) from None
    if len(dl) < samples:
        raise DataError(
            f"evaluation file {path} holds {len(dl)} pairs, fewer than {samples} requested "
            "(--eval-samples)"
        )
    return CsiSet("evaluation", str(path), len(dl), dl, side=ul)


def _csi_set(role: str, path: str | None, samples: int, minimum: int, option: str) -> CsiSet:
    if path is None:
        from csideploy.calibration import synthetic

        if role == "calibration":
            seed, data = synthetic.CALIBRATION_SEED, synthetic.default_calibration(samples)
        else:
            seed, data = synthetic.EVALUATION_SEED, synthetic.default_evaluation(samples)
        return CsiSet(
            role=role,
            source=f"synthetic indoor (seed {seed})",
            samples=len(data),
            data=data,
            seed=seed,
        )
    from csideploy.calibration.io import load_csi

    data = load_csi(path, limit=samples)
    if len(data) < samples:
        needed = f"{samples} requested ({option})"
        if len(data) < minimum:
            needed += f"; at least {minimum} are needed"
        raise DataError(f"{role} file {path} holds {len(data)} samples, fewer than {needed}")
    return CsiSet(role=role, source=str(path), samples=len(data), data=data)


def reference_step(
    split: SplitModel, evaluation: CsiSet, convention: str = NMSE_CONVENTION
) -> FloatReference:
    """The float torch model's codewords, reconstruction and NMSE on the evaluation set, and
    the exported encoder module's codewords (what the files are held to)."""
    return float_reference(
        split.encoder,
        split.decoder,
        evaluation.data,
        convention=convention,
        exported_encoder=split.export_encoder,
        side=evaluation.side,
        integer_codeword=bool(split.ue_graph and split.ue_graph.integer),
    )


EXPORT_MODULE_RELATIVE_TOLERANCE = 1e-5
"""Folding and linearization only reorder float arithmetic: the export module's codeword may
differ from the float encoder's by at most this share of the largest |codeword|."""
LEVEL_MISMATCH_LIMIT = 1e-3
"""Integer codewords: share of levels allowed to differ from torch (rounding ties only)."""


def export_module_step(split: SplitModel, reference: FloatReference) -> dict[str, Any]:
    """Parity of the module that is exported against the float encoder, in torch.

    A float codeword: max-abs error relative to the largest |codeword| (BN folding and
    Conv1d -> Linear); integer levels: the share of levels that differ.
    """
    expected, actual = reference.codewords, reference.parity_codewords
    error = float(np.max(np.abs(expected.astype(np.float64) - actual))) if expected.size else 0.0
    if reference.integer_codeword:
        mismatch = float(np.mean(expected != actual)) if expected.size else 0.0
        gate = GateResult(
            "export module level mismatch",
            mismatch,
            LEVEL_MISMATCH_LIMIT,
            mismatch <= LEVEL_MISMATCH_LIMIT and error <= 1.0,
        )
    else:
        peak = float(np.max(np.abs(expected))) if expected.size else 0.0
        relative = error / peak if peak > 0 else error
        gate = GateResult(
            "export module relative max-abs error",
            relative,
            EXPORT_MODULE_RELATIVE_TOLERANCE,
            relative <= EXPORT_MODULE_RELATIVE_TOLERANCE,
        )
    if not gate.passed:
        raise ToleranceError(
            f"the export copy of the encoder (BN folded: {len(split.folded)}, linearized: "
            f"{len(split.linearized)}) differs from the float encoder: {gate.name} "
            f"{gate.measured:.3g} > {gate.limit:g}"
        )
    return {
        "export_module": {
            "bn_folded": list(split.folded),
            "bn_not_folded": list(split.not_folded),
            "linearized": list(split.linearized),
            "ue_graph_outputs": list(split.output_names) if split.ue_graph else None,
            "max_abs_error": error,
            "gate": gate.to_dict(),
        }
    }


def measure_step(
    artifacts: Sequence[ArtifactResult],
    staging: Path,
    *,
    runs: int,
    input_shapes: Mapping[str, Sequence[int]],
) -> list[ArtifactResult]:
    """A quick batch-1, one-thread latency for every artifact whose format can measure it."""
    if runs <= 0:
        return list(artifacts)
    measured = []
    for artifact in artifacts:
        step = FORMAT_STEPS.get(artifact.format)
        if step is None or step.latency is None:
            measured.append(artifact)
            continue
        latency = step.latency(staging / artifact.file, input_shapes[artifact.role], runs)
        measured.append(replace(artifact, latency=latency))
    return measured


def write_step(staging: Path, result: ExportResult, *, version: str = "0.1.0") -> ExportResult:
    """numerics.json, report.md, then the handset bundle (runner, golden vectors, model card,
    manifest.json); returns the result with its file list."""
    from csideploy.export.bundle_step import write_bundle
    from csideploy.report.render import render_report

    write_reports(staging, result)
    render_report([staging], export_result=result)
    write_bundle(staging, result, version=version)
    listed = sorted(p for p in staging.rglob("*") if p.is_file())
    return replace(result, files=tuple(file_entry(p, staging) for p in listed))


def versions() -> dict[str, str]:
    import onnxruntime
    import onnxscript
    import torch

    return {
        "csideploy": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
    }


# --------------------------------------------------------------------------- ONNX format


def _onnx_latency(path: Path, input_shape: Sequence[int], runs: int) -> LatencyResult:
    return quick_latency("onnxruntime", path, runs)


@register_format("onnx", latency=_onnx_latency)
def onnx_step(context: ExportContext) -> list[ArtifactResult]:
    """encoder.onnx and decoder.onnx (fp32), and with `int8` the quantized encoder."""
    encoder = export_encoder_onnx(context)
    decoder = export_decoder_onnx(context)
    artifacts = [encoder]
    if context.config.int8 is not None:
        from csideploy.export.int8_onnx_step import quantize_encoder_onnx

        artifacts.append(quantize_encoder_onnx(context, encoder))
    artifacts.append(decoder)
    return artifacts


def export_encoder_onnx(context: ExportContext) -> ArtifactResult:
    """Float encoder (or integer handset graph) to ONNX, gated against the torch module."""
    file = "encoder.onnx"
    split = context.split
    info = export_onnx(
        split.export_encoder,
        context.staging / file,
        role="encoder",
        input_name=ENCODER_IO[0],
        output_name=ENCODER_IO[1],
        output_names=split.output_names,
        input_shape=split.input_shape,
        metadata=context.metadata(role="encoder", precision="fp32"),
        opset=context.config.opset,
    )
    codewords = encode_onnx(context.staging / file, context.reference.csi)
    numerics = encoder_numerics(context.reference, split.decoder, codewords)
    gate = float_gate(context, numerics, what=f"{file} (torch -> ONNX fp32)")
    return _onnx_artifact(context, file, "encoder", "fp32", info, numerics, (gate,))


def encode_onnx(path: Path, csi: np.ndarray) -> np.ndarray:
    """The decoder's float codeword from an ONNX encoder: its outputs, flattened in order."""
    return flat_codeword(OnnxRunner(path).run_outputs(csi))


def float_gate(context: ExportContext, numerics: Numerics, *, what: str) -> GateResult:
    """The gate of a float conversion: max-abs error, or level mismatch for integer codes."""
    if context.reference.integer_codeword and numerics.compared_output == "codeword":
        return check_levels(numerics, LEVEL_MISMATCH_LIMIT, what=what)
    return check_parity(numerics, context.onnx_tolerance, what=what)


def export_decoder_onnx(context: ExportContext) -> ArtifactResult:
    """Float decoder to ONNX, gated on the reconstruction max-abs error against torch."""
    file = "decoder.onnx"
    (codeword_name, codeword_shape), *extra = context.split.decoder_inputs
    info = export_onnx(
        context.split.export_decoder,
        context.staging / file,
        role="decoder",
        input_name=codeword_name,
        output_name=DECODER_IO[1],
        input_shape=codeword_shape,
        extra_inputs=extra,
        metadata=context.metadata(role="decoder", precision="fp32"),
        opset=context.config.opset,
    )
    inputs = [context.reference.codewords]
    if context.reference.side is not None:
        inputs.append(context.reference.side)
    reconstruction = OnnxRunner(context.staging / file).run_outputs(*inputs)[0]
    numerics = decoder_numerics(context.reference, reconstruction.astype(np.float32))
    gate = check_parity(numerics, context.onnx_tolerance, what=f"{file} (torch -> ONNX fp32)")
    return _onnx_artifact(context, file, "decoder", "fp32", info, numerics, (gate,))


def _onnx_artifact(
    context: ExportContext,
    file: str,
    role: str,
    precision: str,
    info: OnnxGraphInfo,
    numerics: Numerics,
    gates: tuple[GateResult, ...],
) -> ArtifactResult:
    return ArtifactResult(
        path=context.final_path(file),
        format="onnx",
        role=role,
        side="UE" if role == "encoder" else "BS",
        precision=precision,
        bytes=info.num_bytes,
        sha256=info.sha256,
        numerics=numerics,
        gates=gates,
        inputs=info.inputs,
        outputs=info.outputs,
        op_counts=info.op_counts,
    )


# --------------------------------------------------------------------------- the recipe


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        from csideploy import console

        start = time.perf_counter()
        try:
            with console.step(name):
                yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def run_export(config: ExportConfig) -> ExportResult:
    """Run every step; the output directory appears only when every gate has passed."""
    from csideploy.models.registry import get_entry

    unknown = [f for f in config.formats if f not in FORMAT_STEPS]
    if unknown:
        raise CsiDeployError(
            f"unknown export format {unknown[0]!r}; known: {', '.join(sorted(FORMAT_STEPS))}"
        )
    timer = _Timer()
    with timer.step("load"):
        loaded, checkpoint = load_step(config)
    cr = int(loaded.cr)
    target = check_output(config.output_dir(cr), force=config.force)
    entry = get_entry(loaded.name)

    with StagedOutput(target, force=config.force) as staged:
        assert staged.path is not None
        with timer.step("data"):
            evaluation = evaluation_step(config, entry.side_input)
            calibration = calibration_step(config, evaluation)
        with timer.step("surgery"):
            model, surgery = surgery_step(config, loaded.model, evaluation)
        with timer.step("split"):
            split = split_step(model)
        with timer.step("reference"):
            reference = reference_step(split, evaluation, config.convention)
            surgery = {**surgery, **export_module_step(split, reference)}
        input_spec = _input_spec(entry.input_spec)
        with tempfile.TemporaryDirectory(prefix="csideploy-export-") as scratch:
            context = ExportContext(
                config=config,
                model_name=loaded.name,
                cr=cr,
                checkpoint=checkpoint,
                split=split,
                calibration=calibration,
                evaluation=evaluation,
                reference=reference,
                onnx_tolerance=float(entry.onnx_tolerance),
                input_spec=input_spec,
                staging=staged.path,
                out_dir=target,
                scratch=Path(scratch),
            )
            artifacts: list[ArtifactResult] = []
            for name in config.formats:
                with timer.step(name):
                    artifacts += FORMAT_STEPS[name].export(context)
        with timer.step("measure"):
            artifacts = measure_step(
                artifacts,
                staged.path,
                runs=config.latency_runs,
                input_shapes={
                    "encoder": split.input_shape,
                    "decoder": (split.codeword_length,),
                },
            )
        result = ExportResult(
            model=loaded.name,
            cr=cr,
            codeword_length=split.codeword_length,
            out_dir=target,
            checkpoint=checkpoint,
            int8=config.int8,
            formats=config.formats,
            convention=reference.convention,
            float_nmse_db=reference.nmse_db,
            calibration=calibration,
            evaluation=evaluation,
            artifacts=tuple(artifacts),
            sizes=split.sizes,
            linearized=split.linearized,
            input_spec=input_spec,
            codeword_spec=_codeword_spec(split),
            onnx_tolerance=float(entry.onnx_tolerance),
            max_nmse_drop_db=config.max_nmse_drop,
            versions=versions(),
            surgery=surgery,
        )
        with timer.step("write"):
            result = write_step(staged.path, result, version=config.version)
            staged.commit()
    return replace(result, seconds=timer.seconds)


def _codeword_spec(split: SplitModel) -> dict[str, Any]:
    """The manifest's codeword section: one float tensor, or the handset graph's outputs."""
    if split.ue_graph is not None:
        return {"shape": ["batch", split.codeword_length], **split.ue_graph.describe()}
    return {
        "name": ENCODER_IO[1],
        "shape": ["batch", split.codeword_length],
        "dtype": "float32",
        "length": split.codeword_length,
    }


def _input_spec(spec: Any) -> dict[str, Any]:
    return {
        "name": ENCODER_IO[0],
        "shape": ["batch", *spec.shape],
        "layout": spec.layout,
        "dtype": spec.dtype,
        "value_range": list(spec.value_range),
        "zero_offset": spec.zero_offset,
        "description": spec.description,
    }


def _register_optional_formats() -> None:
    """TFLite and ExecuTorch register on import; their heavy dependencies load when they run."""
    from csideploy.export import pte_step, tflite_step  # noqa: F401


_register_optional_formats()
