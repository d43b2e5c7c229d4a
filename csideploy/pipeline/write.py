"""The export directory: built in a temporary sibling, renamed into place only when complete.

`StagedOutput` owns the directory's life: it refuses an existing target without `force`,
and with `force` replaces only a directory that is recognisably a csideploy export
(`csideploy.bundle.replace`). It creates `<out>.tmp-<pid>-XXXX` next to the target (so the
final rename stays on one file system), removes it if anything fails, and on `commit()`
renames it to the target. With `force`, the old directory is moved aside first and deleted
only after the new one is in place. Staging directories of killed exports are removed or
reported on the next export to the same target (`csideploy.pipeline.stale`).

`write_reports` writes `numerics.json`, `report.md` and, last, `manifest.json` (which lists
every other file with its sha256 and size).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import onnx

from csideploy import __version__
from csideploy.bundle.replace import check_replaceable_dir
from csideploy.errors import CsiDeployError, OutputExistsError
from csideploy.gates.numerics import format_layer_table
from csideploy.pipeline import stale
from csideploy.pipeline.results import ExportResult, FileEntry, file_entry, jsonable

MANIFEST_FORMAT = "csideploy-export"
MANIFEST_VERSION = 1
MANIFEST = "manifest.json"
NUMERICS = "numerics.json"
REPORT = "report.md"


def check_output(out: str | os.PathLike[str], *, force: bool) -> Path:
    """The absolute target, or an error if it exists (without `force`), is not a directory, or
    is not a csideploy export that `force` may replace."""
    target = Path(out).expanduser().absolute()
    if target.exists() or target.is_symlink():
        if not target.is_dir() or target.is_symlink():
            raise OutputExistsError(f"output path {target} exists and is not a directory")
        if not force:
            raise OutputExistsError(f"output directory {target} exists; pass --force to replace it")
        check_replaceable_dir(target)
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CsiDeployError(f"cannot write to {target}: {parent} is not a directory")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise CsiDeployError(f"cannot write to {target}: {parent} is not writable")
            break
    return target


class StagedOutput:
    """A temporary sibling directory that becomes `target` on `commit()`, or disappears."""

    def __init__(self, target: str | os.PathLike[str], *, force: bool = False) -> None:
        self.target = check_output(target, force=force)
        self.force = force
        self.path: Path | None = None
        self._created_parents: list[Path] = []
        self._committed = False

    def __enter__(self) -> StagedOutput:
        parent = self.target.parent
        try:
            missing = [p for p in (parent, *parent.parents) if not p.exists()]
            for directory in reversed(missing):
                directory.mkdir()
                self._created_parents.append(directory)
            stale.report(stale.sweep(self.target))
            self.path = Path(tempfile.mkdtemp(prefix=stale.prefix(self.target), dir=parent))
        except OSError as error:
            self._remove_created_parents()
            raise CsiDeployError(
                f"cannot write to {self.target}: {error.strerror or error}"
            ) from None
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._committed:
            return
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        self._remove_created_parents()

    def commit(self) -> Path:
        """Rename the staged directory to the target (replacing it when `force`)."""
        if self.path is None:
            raise RuntimeError("StagedOutput.commit() outside its `with` block")
        self.path.chmod(0o755)
        old = None
        if self.target.exists():
            if not self.force:
                raise OutputExistsError(
                    f"output directory {self.target} appeared during the export; "
                    "pass --force to replace it"
                )
            check_replaceable_dir(self.target)  # what is deleted below is still ours
            old = Path(
                tempfile.mkdtemp(
                    prefix=stale.prefix(self.target, stale.PARKED), dir=self.target.parent
                )
            )
            os.replace(self.target, old / self.target.name)
        try:
            os.replace(self.path, self.target)
        except OSError as error:
            if old is not None:
                os.replace(old / self.target.name, self.target)
                shutil.rmtree(old, ignore_errors=True)
            raise CsiDeployError(f"cannot move the export into {self.target}: {error}") from None
        self._committed = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.target

    def _remove_created_parents(self) -> None:
        for directory in reversed(self._created_parents):
            try:
                directory.rmdir()
            except OSError:
                break
        self._created_parents.clear()


def write_json(path: Path, payload: Any) -> None:
    """Deterministic JSON: two-space indent, insertion order, no NaN / inf, final newline."""
    text = json.dumps(jsonable(payload), indent=2, allow_nan=False, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_reports(directory: Path, result: ExportResult) -> tuple[FileEntry, ...]:
    """Write numerics.json, report.md, then manifest.json; return every file's entry."""
    write_json(directory / NUMERICS, numerics_document(result))
    (directory / REPORT).write_text(report_markdown(result), encoding="utf-8")
    listed = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = tuple(file_entry(p, directory) for p in listed)
    write_json(directory / MANIFEST, manifest_document(result, entries))
    return (*entries, file_entry(directory / MANIFEST, directory))


def manifest_document(result: ExportResult, files: tuple[FileEntry, ...]) -> dict[str, Any]:
    """manifest.json: what the directory holds and how it was made (first version)."""
    artifacts = {a.file: a for a in result.artifacts}
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "model": result.model,
        "cr": result.cr,
        "checkpoint": result.checkpoint.to_dict(),
        "files": [
            {
                **entry.to_dict(),
                **(
                    {
                        "format": artifacts[entry.path].format,
                        "role": artifacts[entry.path].role,
                        "side": artifacts[entry.path].side,
                        "precision": artifacts[entry.path].precision,
                    }
                    if entry.path in artifacts
                    else {}
                ),
            }
            for entry in files
        ],
        "input": result.input_spec,
        "codeword": result.codeword_spec,
        "quantization": {
            a.file: a.quantization.to_dict() for a in result.artifacts if a.quantization
        },
        "calibration": result.calibration.to_dict() if result.calibration else None,
        "evaluation": result.evaluation.to_dict(),
        "versions": dict(result.versions),
    }


def numerics_document(result: ExportResult) -> dict[str, Any]:
    """numerics.json: every artifact against the float model on the same evaluation set."""
    return {
        "model": result.model,
        "cr": result.cr,
        "nmse_convention": {
            "name": result.convention.name,
            "description": result.convention.description,
        },
        "samples": {
            "evaluation": result.evaluation.samples,
            "calibration": result.calibration.samples if result.calibration else None,
        },
        "evaluation": result.evaluation.to_dict(),
        "calibration": result.calibration.to_dict() if result.calibration else None,
        "float_nmse_db": result.float_nmse_db,
        "sizes": result.sizes.to_dict(),
        "limits": {
            "onnx_max_abs_error": result.onnx_tolerance,
            "max_nmse_drop_db": result.max_nmse_drop_db,
        },
        "artifacts": [
            {
                "file": a.file,
                "format": a.format,
                "role": a.role,
                "precision": a.precision,
                **a.numerics.to_dict(),
                "gates": [g.to_dict() for g in a.gates],
                "float_ops": list(a.float_ops) if a.float_ops is not None else None,
                "layers": [row.to_dict() for row in a.layers],
            }
            for a in result.artifacts
        ],
    }


def report_markdown(result: ExportResult) -> str:
    """report.md: sizes, a quick latency line per file and the numerics table."""
    sizes = result.sizes
    lines = [
        f"# {result.model} CR 1/{result.cr}: export report",
        "",
        f"Checkpoint: `{result.checkpoint.label}` (sha256 {result.checkpoint.sha256[:16]}..., "
        f"{result.checkpoint.source_format}). Codeword: {result.codeword_length} floats.",
        "",
        "## Sizes",
        "",
        "| part | params | MACs (batch 1) |",
        "|---|---:|---:|",
        f"| encoder (UE) | {sizes.params_encoder:,} | {sizes.macs_encoder:,} |",
        f"| decoder (BS) | {sizes.params_decoder:,} | {sizes.macs_decoder:,} |",
        "",
        "| file | side | precision | bytes | runtime | latency p50 / p90 (us) |",
        "|---|---|---|---:|---|---:|",
    ]
    for a in result.artifacts:
        runtime = a.latency.runtime if a.latency else "-"
        p50 = f"{a.latency.p50_us:.1f} / {a.latency.p90_us:.1f}" if a.latency else "-"
        lines.append(f"| {a.file} | {a.side} | {a.precision} | {a.bytes:,} | {runtime} | {p50} |")
    latency = next((a.latency for a in result.artifacts if a.latency), None)
    if latency is not None:
        lines += [
            "",
            f"Latency: {latency.threads} thread, batch {latency.batch}, {latency.runs} runs "
            f"after {latency.warmup} warm-up, on the machine that ran the export (a quick "
            "check, not a handset figure).",
        ]
    lines += [
        "",
        "## Numerics",
        "",
        f"Evaluation: {result.evaluation.samples} samples of {result.evaluation.source}. "
        f"NMSE convention `{result.convention.name}`: {result.convention.description}. "
        f"Float model NMSE: {result.float_nmse_db:.2f} dB.",
    ]
    if result.calibration is not None:
        c = result.calibration
        lines.append(f"Calibration: {c.samples} samples of {c.source}, method {c.method}.")
    lines += [
        "",
        "| file | compared | max-abs error | NMSE (dB) | Delta NMSE (dB) | ops left in float |",
        "|---|---|---:|---:|---:|---|",
    ]
    for a in result.artifacts:
        n = a.numerics
        ops = ", ".join(a.float_ops) if a.float_ops else "-"
        lines.append(
            f"| {a.file} | {n.compared_output} | {n.max_abs_error:.3g} | {n.nmse_db:.2f} | "
            f"{n.delta_nmse_db:+.3f} | {ops} |"
        )
    for a in result.artifacts:
        if a.layers:
            lines += [
                "",
                f"### {a.file}: per-tensor SQNR, worst first",
                "",
                format_layer_table(a.layers, rows=10),
            ]
    return "\n".join(lines) + "\n"


def write_step(staging: Path, result: ExportResult, *, version: str = "0.1.0") -> ExportResult:
    """numerics.json, report.md, then the handset bundle (runner, golden vectors, model card,
    manifest.json); returns the result with its file list."""
    from csideploy.pipeline.bundle_step import write_bundle
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
