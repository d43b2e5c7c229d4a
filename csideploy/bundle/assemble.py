"""Assemble a bundle directory: golden vectors for every artifact, then the manifest.

The expected outputs are produced by running each artifact in its own runtime on the golden
inputs, so `verify` on another machine compares like with like within the declared tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.bundle.golden import write_expected, write_inputs
from csideploy.bundle.manifest import (
    SCHEMA_VERSION,
    file_entry,
    write_manifest,
)
from csideploy.bundle.verify import RUNTIMES, run_artifact_outputs

FORMATS = ("onnx", "tflite", "pte")
PRECISIONS = ("fp32", "int8", "dynamic")


@dataclass(frozen=True)
class ArtifactSpec:
    """What the manifest says about one UE artifact (the file already sits in the bundle)."""

    file: str
    format: str
    precision: str
    input: dict[str, Any]
    output: dict[str, Any]
    """The first output (the codeword of a single-output encoder)."""
    tolerance: float
    relative_tolerance: bool = False
    """If set, `tolerance` is a share of the largest expected |output| (dynamic INT8 files)."""
    opset: int | None = None
    schema: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[dict[str, Any], ...] = ()
    """Every output, in codeword order, when the file has more than one."""

    @property
    def all_outputs(self) -> tuple[dict[str, Any], ...]:
        return self.outputs or (self.output,)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.tolerance > 0:
            raise ValueError(f"tolerance must be positive, got {self.tolerance}")

    @property
    def runtime(self) -> str:
        return RUNTIMES[self.format]


def assemble_bundle(
    bundle_dir: Path,
    *,
    header: dict[str, Any],
    artifacts: list[ArtifactSpec],
    golden_inputs: np.ndarray,
    ue_files: list[str],
    bs_files: list[str],
    measurement_files: list[str] | None = None,
) -> dict[str, Any]:
    """Write `golden/` and `manifest.json` into `bundle_dir`; return the manifest.

    `header` holds the manifest's descriptive sections (artifact_version, model,
    preprocessing, feedback, calibration, tools). `ue_files` are the bundle-relative files a
    handset receives besides the golden vectors; `bs_files` stay on the BS side;
    `measurement_files` carry timings (different on every run) and are not packed.
    """
    bundle_dir = Path(bundle_dir)
    inputs_path = write_inputs(bundle_dir, golden_inputs)
    golden_files = {inputs_path}
    entries = []
    for spec in artifacts:
        names = [o["name"] for o in spec.all_outputs]
        parts = run_artifact_outputs(spec.runtime, bundle_dir / spec.file, golden_inputs, names)
        outputs = np.concatenate([y.reshape(len(y), -1) for y in parts], axis=1)
        golden = write_expected(
            bundle_dir,
            spec.file,
            golden_inputs,
            parts,
            input_name=spec.input["name"],
            output_specs=spec.all_outputs,
        )
        golden_files |= _files_under(bundle_dir, golden)
        tolerance = spec.tolerance
        if spec.relative_tolerance:
            tolerance = max(1e-6, spec.tolerance * float(np.max(np.abs(outputs))))
        entries.append(_artifact_entry(spec, golden, tolerance))
    manifest = {
        **header,
        "schema_version": SCHEMA_VERSION,
        "artifacts": entries,
        "files": [file_entry(bundle_dir, p) for p in sorted({*ue_files, *golden_files})],
        "bs_side": [file_entry(bundle_dir, p) for p in sorted(bs_files)],
        "measurements": sorted(measurement_files or []),
    }
    write_manifest(bundle_dir, manifest)
    return manifest


def _artifact_entry(spec: ArtifactSpec, golden: dict[str, str], tolerance: float) -> dict[str, Any]:
    return {
        "file": spec.file,
        "format": spec.format,
        "precision": spec.precision,
        "runtime": spec.runtime,
        "opset": spec.opset,
        "schema": spec.schema,
        "input": spec.input,
        "output": spec.output,
        "tolerance": {"max_abs": tolerance},
        "golden": golden,
        **({"outputs": list(spec.outputs)} if spec.outputs else {}),
        **spec.extra,
    }


def _files_under(root: Path, golden: dict[str, str]) -> set[str]:
    files = {golden["inputs"], golden["outputs"]}
    if "onnx_test_dir" in golden:
        test_dir = root / golden["onnx_test_dir"]
        files |= {p.relative_to(root).as_posix() for p in test_dir.rglob("*") if p.is_file()}
    return files
