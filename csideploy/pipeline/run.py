"""`run_export`: the export as a short list of typed steps inside a staged output directory.

    load      checkpoint -> LoadedCheckpoint            (`steps.load_step`)
    data      evaluation and calibration CSI            (`steps.evaluation_step`, ...)
    surgery   optional hard-sigmoid substitution        (`steps.surgery_step`)
    split     UE encoder | BS decoder, export-ready     (`steps.split_step`)
    reference the float torch model on the eval set     (`steps.reference_step`)
    formats   each format: encoder per precision, then  (`artifacts.format_artifacts`)
              the decoder, each gated against float
    measure   a quick latency per artifact              (`artifacts.measure_step`)
    write     numerics.json, report, bundle             (`write.write_step`)

If any step fails, nothing is left at the target (`csideploy.pipeline.write.StagedOutput`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from csideploy.errors import CsiDeployError
from csideploy.formats.onnx import ENCODER_IO
from csideploy.pipeline.artifacts import format_artifacts, measure_step
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.format_steps import FORMAT_STEPS
from csideploy.pipeline.results import ArtifactResult, ExportContext, ExportResult, SplitModel
from csideploy.pipeline.steps import (
    calibration_step,
    evaluation_step,
    export_module_step,
    load_step,
    reference_step,
    split_step,
    surgery_step,
)
from csideploy.pipeline.write import StagedOutput, check_output, versions, write_step


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

    missing = [f for f in config.formats if f not in FORMAT_STEPS]
    if missing:  # a registered format whose step module is not imported by `artifacts`
        raise CsiDeployError(f"format {missing[0]!r} has no export step")
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
                    artifacts += format_artifacts(context, name)
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

