"""The float ONNX files of the export: encoder.onnx and decoder.onnx, each gated against torch."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from csideploy.formats.onnx import (
    DECODER_IO,
    ENCODER_IO,
    OnnxGraphInfo,
    OnnxRunner,
    export_onnx,
)
from csideploy.gates.numerics import (
    GateResult,
    Numerics,
    check_parity,
    decoder_numerics,
    encoder_numerics,
)
from csideploy.models.ue_graph import flat_codeword
from csideploy.pipeline.format_steps import float_gate
from csideploy.pipeline.results import ArtifactResult, ExportContext
from csideploy.runner import LatencyResult, quick_latency


def _onnx_latency(path: Path, input_shape: Sequence[int], runs: int) -> LatencyResult:
    return quick_latency("onnxruntime", path, runs)



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

