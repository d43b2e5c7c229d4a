"""Every file of the export: for each format, the fp32 encoder, then each INT8 precision, then
the decoder; then a quick latency of each file.

The formats register in `csideploy.pipeline.format_steps.FORMAT_STEPS`: ONNX here, TFLite and
ExecuTorch in their own step modules (imported below so that they are registered).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from csideploy.pipeline import pte_step, tflite_step  # noqa: F401 (they register their format)
from csideploy.pipeline.format_steps import FORMAT_STEPS, encoder_precisions, register_step
from csideploy.pipeline.int8_onnx_step import quantize_encoder_onnx
from csideploy.pipeline.onnx_float import _onnx_latency, export_decoder_onnx, export_encoder_onnx
from csideploy.pipeline.results import ArtifactResult, ExportContext


def _onnx_encoder(
    context: ExportContext, precision: str, written: Sequence[ArtifactResult]
) -> ArtifactResult:
    """encoder.onnx (fp32), or its INT8 version quantized from the fp32 file."""
    if precision == "fp32":
        return export_encoder_onnx(context)
    return quantize_encoder_onnx(context, written[0])


register_step("onnx", encoder=_onnx_encoder, decoder=export_decoder_onnx, latency=_onnx_latency)


def format_artifacts(context: ExportContext, name: str) -> list[ArtifactResult]:
    """The files of one format: the encoder in each precision, then the decoder (if any)."""
    step = FORMAT_STEPS[name]
    written: list[ArtifactResult] = []
    for precision in encoder_precisions(context.config):
        written.append(step.encoder(context, precision, written))
    if step.decoder is not None:
        written.append(step.decoder(context))
    return written


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

