"""The last export step: turn the export directory into a handset bundle.

Adds the standalone runner, golden vectors for every UE artifact, the model card and the
bundle manifest (schema in `csideploy/bundle/manifest.schema.json`), which replaces the
export writer's first manifest and keeps its sections.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.bundle.assemble import ArtifactSpec, assemble_bundle
from csideploy.bundle.contract import feedback_payload, preprocessing_steps, tool_versions
from csideploy.bundle.manifest import MEASUREMENT_FILES, file_entry, write_manifest
from csideploy.bundle.model_card import render_model_card

GOLDEN_SAMPLES = 8
RUNNER = "runner.py"
MODEL_CARD = "README.md"
INTEGER_QUANTIZED_LEVELS = 2.0
"""Quantized files with an integer codeword: levels a runtime on another CPU may move."""
RELATIVE_TOLERANCE_QUANTIZED = 0.02
"""Quantized artifacts without a known output scale: tolerance as a share of max |output|."""


def write_bundle(directory: Path, result: Any, *, version: str) -> dict[str, Any]:
    """Write runner.py, golden/, README.md and the bundle manifest.json into `directory`."""
    directory = Path(directory)
    runner = Path(str(resources.files("csideploy").joinpath(RUNNER)))
    shutil.copyfile(runner, directory / RUNNER)
    golden_inputs = np.ascontiguousarray(result.evaluation.data[:GOLDEN_SAMPLES], np.float32)
    ue = [a for a in result.artifacts if a.side == "UE"]
    specs = [_artifact_spec(directory, a, result) for a in ue]
    reports = [p for p in ("numerics.json",) if (directory / p).is_file()]
    measurements = [p for p in MEASUREMENT_FILES if (directory / p).is_file()]
    manifest = assemble_bundle(
        directory,
        header=_header(result, version),
        artifacts=specs,
        golden_inputs=golden_inputs,
        ue_files=[*(a.file for a in ue), *reports, RUNNER],
        bs_files=[a.file for a in result.artifacts if a.side == "BS"],
        measurement_files=measurements,
    )
    (directory / MODEL_CARD).write_text(render_model_card(manifest), encoding="utf-8")
    manifest["files"] = sorted(
        [*manifest["files"], file_entry(directory, MODEL_CARD)], key=lambda e: e["path"]
    )
    write_manifest(directory, manifest)
    return manifest


def _header(result: Any, version: str) -> dict[str, Any]:
    checkpoint = result.checkpoint.to_dict()
    calibration = result.calibration.to_dict() if result.calibration else {}
    return {
        "artifact_version": version,
        "model": {
            "name": result.model,
            "cr": result.cr,
            "codeword_length": result.codeword_length,
            "checkpoint": {
                "sha256": checkpoint.get("sha256"),
                "source_format": checkpoint.get("source_format", "unknown"),
                "file": checkpoint.get("file"),
            },
        },
        "input": dict(result.input_spec),
        "codeword": dict(result.codeword_spec),
        "preprocessing": preprocessing_steps(),
        "feedback": feedback_payload(
            result.codeword_length, result.codeword_spec.get("bits_per_report")
        ),
        "calibration": {
            "source": calibration.get("source", "none (no static INT8)"),
            "samples": calibration.get("samples", 0),
            "method": calibration.get("method", "none"),
        },
        "evaluation": result.evaluation.to_dict(),
        "quantization": {
            a.file: a.quantization.to_dict() for a in result.artifacts if a.quantization
        },
        "surgery": dict(result.surgery),
        "tools": tool_versions(),
    }


def _artifact_spec(directory: Path, artifact: Any, result: Any) -> ArtifactSpec:
    details = dict(artifact.details)
    in_q, out_q = details.get("input", {}), details.get("output", {})
    spec_in = artifact.inputs[0].to_dict()
    spec_out = artifact.outputs[0].to_dict()
    spec_in.update(
        layout=str(details.get("layout", "nchw")).upper(),
        value_range=list(result.input_spec["value_range"]),
        zero_offset=result.input_spec["zero_offset"],
        scale=in_q.get("scale"),
        zero_point=in_q.get("zero_point"),
    )
    spec_out.update(scale=out_q.get("scale"), zero_point=out_q.get("zero_point"))
    outputs: tuple[dict[str, Any], ...] = ()
    if len(artifact.outputs) > 1:
        outputs = tuple(_output_spec(t, details) for t in artifact.outputs)
        spec_out = dict(outputs[0])
    extra = {"float_ops": list(artifact.float_ops) if artifact.float_ops else []}
    if details:
        extra["details"] = details
    tolerance, relative = _tolerance(artifact, result, out_q.get("scale"))
    return ArtifactSpec(
        file=artifact.file,
        format=artifact.format,
        precision=artifact.precision,
        input=spec_in,
        output=spec_out,
        tolerance=tolerance,
        relative_tolerance=relative,
        opset=_opset(directory, artifact),
        schema="tflite" if artifact.format == "tflite" else None,
        extra=extra,
        outputs=outputs,
    )


def _output_spec(tensor: Any, details: dict[str, Any]) -> dict[str, Any]:
    """One output of a multi-output file, with its quantization when the file has one."""
    spec = tensor.to_dict()
    quantized = {o.get("name"): o for o in details.get("outputs", [])}.get(tensor.name, {})
    spec.update(scale=quantized.get("scale"), zero_point=quantized.get("zero_point"))
    return spec


def _tolerance(artifact: Any, result: Any, output_scale: float | None) -> tuple[float, bool]:
    """(tolerance, relative): fp32 the ONNX tolerance (one level for an integer codeword,
    whose rounding ties may fall either way on another CPU); int8 output two quantization
    steps; otherwise a share of the largest expected output."""
    integer_codeword = "parts" in result.codeword_spec
    if artifact.precision == "fp32":
        return (1.0 if integer_codeword else float(result.onnx_tolerance)), False
    if integer_codeword:
        return INTEGER_QUANTIZED_LEVELS, False
    if output_scale:
        return 2.0 * float(output_scale), False
    return RELATIVE_TOLERANCE_QUANTIZED, True


def _opset(directory: Path, artifact: Any) -> int | None:
    if artifact.format != "onnx":
        return None
    import onnx

    model = onnx.load(str(directory / artifact.file), load_external_data=False)
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return int(opsets[0]) if opsets else None
