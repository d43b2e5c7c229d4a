"""The ExecuTorch format of the export pipeline: encoder.pte, encoder.int8.pte, encoder.dyn.pte.

Registered as format "pte" in `pipeline.format_steps.FORMAT_STEPS`. Every program is run by
ExecuTorch's own runtime (the standalone runner's adapter) over the evaluation set and held to
the same gates as the ONNX and TFLite files: the fp32 program to the codeword max-abs
tolerance (integer codewords: the share of levels that differ), the INT8 programs to
`--max-nmse-drop` and to fidelity to the float model. An ExecuTorch program carries no
tensor names: its inputs and outputs are positional (`input_0`, `output_0`, ... in the order
of the ONNX file's outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from csideploy.errors import DataError
from csideploy.formats.onnx import TensorInfo
from csideploy.formats.pte import PteArtifact, export_pte
from csideploy.gates.numerics import GateResult, Numerics, encoder_numerics
from csideploy.models.ue_graph import flat_codeword
from csideploy.pipeline.format_steps import encoder_gates, encoder_precisions, register_step
from csideploy.pipeline.int8_onnx_step import layer_plan, uses_layer_plan
from csideploy.pipeline.results import ArtifactResult, ExportContext
from csideploy.quantize.base import encoder_file
from csideploy.quantize.pte_pt2e import pt2e_step
from csideploy.quantize.torch_plan import planned_encoder
from csideploy.runner import LatencyResult, quick_latency

RUNTIME = "executorch"
WARMUP = 20


def _latency(path: Path, input_shape: Sequence[int], runs: int) -> LatencyResult:
    """p50 / p90 of one batch-1 call on one thread, with the runner's timing loop."""
    return quick_latency(RUNTIME, path, runs, warmup=WARMUP)


def pte_step(context: ExportContext) -> list[ArtifactResult]:
    """The fp32 ExecuTorch encoder, and with `--int8` the static or dynamic INT8 one."""
    return [_export(context, precision) for precision in encoder_precisions(context.config)]


def run_pte(path: Path, csi: np.ndarray) -> list[np.ndarray]:
    """Each output of a `.pte` encoder on `csi`, one sample at a time, as the file returns it."""
    from csideploy.bundle.execute import run_artifact_outputs

    return run_artifact_outputs(RUNTIME, path, csi)


def _export(context: ExportContext, precision: str) -> ArtifactResult:
    file = encoder_file(".pte", precision)
    calibration = None
    encoder, layers = context.split.export_encoder, None
    if precision == "int8":
        if context.calibration is None:
            raise DataError("static INT8 needs a calibration set")
        calibration = context.calibration.data
        if uses_layer_plan(context):  # the plan's static FC layers, as in TFLite
            planner, plan = layer_plan(context)
            encoder, layers = planned_encoder(encoder, plan.nodes, planner.equalizations)
    artifact = export_pte(
        encoder,
        context.staging / file,
        input_shape=tuple(context.split.input_shape),
        precision=precision,
        quantize=None if precision == "fp32" else pt2e_step(precision, calibration, layers),
    )
    outputs = run_pte(artifact.path, context.reference.csi)
    numerics = encoder_numerics(context.reference, context.split.decoder, flat_codeword(outputs))
    result = _result(
        context,
        artifact,
        outputs,
        numerics,
        encoder_gates(context, file, precision, numerics, runtime="ExecuTorch"),
    )
    if layers is not None:
        result = replace(result, details={**result.details, "quantized_layers": list(layers)})
    return result


def _result(
    context: ExportContext,
    artifact: PteArtifact,
    outputs: list[np.ndarray],
    numerics: Numerics,
    gates: tuple[GateResult, ...],
) -> ArtifactResult:
    shape = (1, *context.split.input_shape)
    return ArtifactResult(
        path=context.final_path(artifact.path.name),
        format="pte",
        role="encoder",
        side="UE",
        precision=artifact.precision,
        bytes=artifact.num_bytes,
        sha256=artifact.sha256,
        numerics=numerics,
        gates=gates,
        inputs=(TensorInfo(name="input_0", shape=shape, dtype="float32"),),
        outputs=tuple(
            TensorInfo(name=f"output_{k}", shape=(1, *y.shape[1:]), dtype=y.dtype.name)
            for k, y in enumerate(outputs)
        ),
        float_ops=artifact.portable_ops if artifact.precision != "fp32" else None,
        details={
            "delegate": "XnnpackBackend",
            "delegate_calls": artifact.delegated_nodes,
            "portable_ops": list(artifact.portable_ops),
            "quantizer": None
            if artifact.precision == "fp32"
            else "XNNPACKQuantizer, int8 symmetric per-channel weights, PT2E",
            "executorch": artifact.executorch,
            "output_names": list(context.split.output_names),
        },
    )


register_step(
    "pte",
    encoder=lambda context, precision, _written: _export(context, precision),
    latency=_latency,
)
