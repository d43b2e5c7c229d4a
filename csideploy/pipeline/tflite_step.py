"""The TFLite format of the export: encoder.tflite, encoder.int8.tflite, encoder.dyn.tflite.

Registered as format "tflite" in `pipeline.format_steps.FORMAT_STEPS`. Every file is run on
LiteRT over the evaluation set and held to the same gates as the ONNX files: the fp32 file to
the codeword max-abs tolerance (integer codewords: the share of levels that differ), the INT8
files to `--max-nmse-drop` (int8 I/O is quantized and dequantized with the file's own scale and
zero point for the comparison). A multi-output handset graph keeps its output names and order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from torch import nn

from csideploy.bundle.execute import run_artifact_outputs
from csideploy.errors import DataError
from csideploy.formats.onnx import TensorInfo
from csideploy.formats.tflite import Converter, TensorSpec, TfliteArtifact
from csideploy.gates.numerics import (
    GateResult,
    Numerics,
    encoder_numerics,
)
from csideploy.models.ue_graph import flat_codeword
from csideploy.pipeline.format_steps import encoder_gates, encoder_precisions, register_step
from csideploy.pipeline.int8_onnx_step import layer_plan, uses_layer_plan
from csideploy.pipeline.qat_step import qat_setup
from csideploy.pipeline.results import ArtifactResult, ExportContext
from csideploy.quantize.base import encoder_file
from csideploy.quantize.qat import QatRejected
from csideploy.quantize.tflite_pt2e import pt2e_convert, pt2e_export_tflite
from csideploy.quantize.torch_plan import planned_encoder
from csideploy.runner import LatencyResult, quick_latency


def _latency(path: Path, input_shape: Sequence[int], runs: int) -> LatencyResult:
    return quick_latency("litert", path, runs)


def tflite_step(context: ExportContext) -> list[ArtifactResult]:
    """The fp32 TFLite encoder, and with `--int8` the static or dynamic INT8 one."""
    return [_export(context, precision) for precision in encoder_precisions(context.config)]


def _export(context: ExportContext, precision: str) -> ArtifactResult:
    file = encoder_file(".tflite", precision)
    calibration = None
    encoder, layers, io = context.split.export_encoder, None, context.config.tflite_io
    tries: list[tuple[nn.Module, Sequence[str] | None, Converter]] = []
    qat = None
    if precision == "int8":
        if context.calibration is None:
            raise DataError("static INT8 needs a calibration set")
        calibration = context.calibration.data
        if uses_layer_plan(context):
            planner, plan = layer_plan(context)
            encoder, layers = planned_encoder(encoder, plan.nodes, planner.equalizations)
            io = "float"
            if context.config.qat_epochs:
                *tuned, qat = qat_setup(context, planner, plan)
                tries.append(tuple(tuned))  # type: ignore[arg-type]
    tries.append((encoder, layers, pt2e_convert))
    for encoder, layers, convert in tries:  # QAT first; the plan alone when it is rejected
        try:
            artifact = pt2e_export_tflite(
                encoder,
                context.staging / file,
                precision=precision,
                calibration=calibration,
                io=io,
                layout=context.config.layout,
                output_names=context.split.output_names,
                layers=layers,
                convert=convert,
            )
            break
        except QatRejected:
            continue
    codewords = flat_codeword(run_artifact_outputs("litert", artifact.path, context.reference.csi))
    numerics = encoder_numerics(context.reference, context.split.decoder, codewords)
    result = _result(
        context,
        artifact,
        numerics,
        encoder_gates(context, file, precision, numerics, runtime="TFLite"),
    )
    if layers is not None:
        result = replace(result, details={**result.details, "quantized_layers": list(layers)})
    if qat is not None:
        result = replace(result, details={**result.details, "qat": qat.to_dict()})
    return result


def _tensor(spec: TensorSpec) -> TensorInfo:
    return TensorInfo(name=spec.name, shape=tuple(spec.shape), dtype=spec.dtype)


def _result(
    context: ExportContext,
    artifact: TfliteArtifact,
    numerics: Numerics,
    gates: tuple[GateResult, ...],
) -> ArtifactResult:
    return ArtifactResult(
        path=context.final_path(artifact.path.name),
        format="tflite",
        role="encoder",
        side="UE",
        precision=artifact.precision,
        bytes=artifact.num_bytes,
        sha256=artifact.sha256,
        numerics=numerics,
        gates=gates,
        inputs=(_tensor(artifact.input),),
        outputs=tuple(_tensor(spec) for spec in artifact.outputs),
        float_ops=artifact.float_ops if artifact.precision != "fp32" else None,
        details={
            "layout": artifact.layout,
            "io_dtype": artifact.io_dtype,
            "input": artifact.input.to_dict(),
            "output": artifact.output.to_dict(),
            "outputs": [spec.to_dict() for spec in artifact.outputs],
            "ops": list(artifact.ops),
            "op_count": artifact.op_count,
            "weight_dtypes": list(artifact.weight_dtypes),
            "converter": artifact.converter,
        },
    )


register_step(
    "tflite",
    encoder=lambda context, precision, _written: _export(context, precision),
    latency=_latency,
)
