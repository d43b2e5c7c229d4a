"""Reading one artifact directory into typed records: what each file is, measures and costs.

The sources are the documents the project writes, read by key: `numerics.json` (export:
NMSE, gates, ops left in float, per-layer SQNR, encoder / decoder params and MACs),
`manifest.json` (model, CR, files), `perf.export.json` (the export's quick latency) and
`perf.json` (`csideploy bench`, schema `csideploy.perf/1`). A document that is missing leaves
its figures empty (shown as a dash); one that cannot be parsed becomes a note. Keys of a
numerics record that this module does not know are kept in `extra`, and every gate is kept
as it is, so figures added to numerics.json later still reach the report.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csideploy import runner
from csideploy.errors import DataError

EXPORT_LATENCY = "perf.export.json"
_KNOWN_NUMERICS = {
    "file", "format", "role", "side", "precision", "compared_output", "max_abs_error",
    "nmse_db", "float_nmse_db", "delta_nmse_db", "samples", "level_mismatch", "gates",
    "float_ops", "layers",
}  # fmt: skip


@dataclass(frozen=True)
class Gate:
    """One numerics gate of a file: what was measured against which limit."""

    name: str
    measured: float
    limit: float
    passed: bool


@dataclass(frozen=True)
class Layer:
    """Per-tensor SQNR of a quantized file (dB, higher is better)."""

    tensor: str
    node: str
    op_type: str
    sqnr_db: float
    local_sqnr_db: float | None


@dataclass(frozen=True)
class Latency:
    """A file's batch-1 latency and where it was measured (`export` or `bench`)."""

    source: str
    runtime: str
    threads: int
    runs: int
    p50_us: float
    p90_us: float | None = None
    p99_us: float | None = None
    timings_us: tuple[float, ...] = ()


@dataclass
class FileRow:
    """Everything the report says about one model file."""

    name: str
    format: str
    role: str
    precision: str
    bytes: int | None = None
    gzip_bytes: int | None = None
    params: int | None = None
    macs: int | None = None
    compared_output: str | None = None
    max_abs_error: float | None = None
    nmse_db: float | None = None
    delta_nmse_db: float | None = None
    level_mismatch: float | None = None
    gates: tuple[Gate, ...] = ()
    float_ops: tuple[str, ...] | None = None
    layers: tuple[Layer, ...] = ()
    latency: Latency | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def side(self) -> str:
        return "UE" if self.role == "encoder" else "BS"

    @property
    def passed(self) -> bool | None:
        """All gates passed (None: no gate was recorded for this file)."""
        return all(g.passed for g in self.gates) if self.gates else None


@dataclass
class Run:
    """One artifact directory as the report sees it."""

    directory: Path
    model: str | None = None
    cr: int | None = None
    files: list[FileRow] = field(default_factory=list)
    numerics: dict[str, Any] | None = None
    perf: dict[str, Any] | None = None
    emulated: dict[str, Any] | None = None
    export_latency: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)
    label_override: str | None = None

    @property
    def label(self) -> str:
        if self.label_override:
            return self.label_override
        return f"{self.model}-cr{self.cr}" if self.model and self.cr else self.directory.name

    @property
    def latency_source(self) -> str | None:
        """`bench` when perf.json timed the files, `export` for the export's check, else None."""
        sources = {f.latency.source for f in self.files if f.latency}
        return "bench" if "bench" in sources else ("export" if sources else None)


def read_json(path: Path, problems: list[str]) -> Any:
    """The parsed document, None when absent; a note in `problems` when unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems.append(f"{path.name} is unreadable ({error}); left out")
        return None


def number(value: Any) -> float | None:
    """A finite float, "inf" strings as infinity, anything else None."""
    if isinstance(value, str) and value in ("inf", "-inf"):
        return math.inf if value == "inf" else -math.inf
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) or math.isinf(value) else None


def integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def load_run(directory: str | os.PathLike[str]) -> Run:
    """Read one directory; a missing directory or one with nothing to report is an error."""
    folder = Path(directory)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    run = Run(folder)
    run.perf = _dict(read_json(folder / "perf.json", run.problems)) or None
    run.emulated = _dict(read_json(folder / "perf.emulated.json", run.problems)) or None
    if run.perf is not None and run.perf.get("emulated"):
        run.emulated, run.perf = run.perf, None
    manifest = _dict(read_json(folder / "manifest.json", run.problems))
    run.numerics = _dict(read_json(folder / "numerics.json", run.problems)) or None
    run.export_latency = _dict(read_json(folder / EXPORT_LATENCY, run.problems)) or None
    run.model, run.cr = _model_and_cr(manifest, run.numerics or {}, run.perf or {})
    run.files = _files(folder, run, manifest)
    if not run.files and run.perf is None and run.numerics is None:
        raise DataError(
            f"{folder}: nothing to report (no .onnx/.tflite files, perf.json or numerics.json)"
        )
    return run


def _model_and_cr(
    manifest: dict[str, Any], numerics: dict[str, Any], perf: dict[str, Any]
) -> tuple[str | None, int | None]:
    """Model and CR: the manifest's `model` section, else numerics.json, else perf.json."""
    declared = runner.manifest_facts(manifest, "")
    if declared["model"] and declared["cr"]:
        return declared["model"], declared["cr"]
    if isinstance(numerics.get("model"), str) and integer(numerics.get("cr")):
        return numerics["model"], numerics["cr"]
    for entry in _list(perf.get("artifacts")):
        if isinstance(entry, dict) and entry.get("model") and integer(entry.get("cr")):
            return str(entry["model"]), entry["cr"]
    return None, None


def _files(folder: Path, run: Run, manifest: dict[str, Any]) -> list[FileRow]:
    """One row per model file on disk (or timed by perf.json), encoders first."""
    rows: dict[str, FileRow] = {}
    try:
        _, paths = runner.discover([str(folder)], include_decoder=True)
    except runner.BenchInputError:
        paths = []
    for path in paths:
        name = path.relative_to(folder).as_posix()
        sizes = runner.file_sizes(path)
        rows[name] = FileRow(
            name=name,
            format=runner.FORMATS[path.suffix.lower()],
            role=runner.artifact_role(name),
            precision=runner.manifest_facts(manifest, name)["precision"] or "",
            bytes=integer(sizes.get("bytes")),
            gzip_bytes=integer(sizes.get("gzip_bytes")),
        )
    for entry in _list((run.perf or {}).get("artifacts")):
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            _merge_perf_artifact(rows, entry)
    for entry in _list((run.numerics or {}).get("artifacts")):
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            _merge_numerics(rows, entry)
    _merge_sizes(rows.values(), _dict((run.numerics or {}).get("sizes")))
    _merge_latency(rows, run)
    return sorted(rows.values(), key=lambda r: (r.role != "encoder", r.name))


def _merge_perf_artifact(rows: dict[str, FileRow], entry: dict[str, Any]) -> None:
    """Sizes, params and MACs that `csideploy bench` recorded for a file."""
    name = entry["name"]
    row = rows.setdefault(
        name,
        FileRow(
            name=name,
            format=str(entry.get("format") or ""),
            role=str(entry.get("role") or runner.artifact_role(name)),
            precision=str(entry.get("precision") or ""),
        ),
    )
    row.precision = row.precision or str(entry.get("precision") or "")
    row.bytes = row.bytes or integer(entry.get("bytes"))
    row.gzip_bytes = row.gzip_bytes or integer(entry.get("gzip_bytes"))
    row.params = row.params or integer(entry.get("params"))
    row.macs = row.macs or integer(entry.get("macs"))


def _merge_numerics(rows: dict[str, FileRow], entry: dict[str, Any]) -> None:
    """One numerics.json artifact record onto its file's row."""
    name = entry["file"]
    row = rows.setdefault(
        name,
        FileRow(
            name=name,
            format=str(entry.get("format") or ""),
            role=str(entry.get("role") or ""),
            precision=str(entry.get("precision") or ""),
        ),
    )
    row.role = str(entry.get("role") or row.role)
    row.precision = str(entry.get("precision") or row.precision)
    row.compared_output = entry.get("compared_output")
    row.max_abs_error = number(entry.get("max_abs_error"))
    row.nmse_db = number(entry.get("nmse_db"))
    row.delta_nmse_db = number(entry.get("delta_nmse_db"))
    row.level_mismatch = number(entry.get("level_mismatch"))
    row.gates = tuple(_gate(g) for g in _list(entry.get("gates")) if isinstance(g, dict))
    ops = entry.get("float_ops")
    row.float_ops = tuple(str(op) for op in ops) if isinstance(ops, list) else None
    row.layers = tuple(_layer(x) for x in _list(entry.get("layers")) if isinstance(x, dict))
    row.extra = {
        key: value
        for key, value in entry.items()
        if key not in _KNOWN_NUMERICS and isinstance(value, int | float | str | bool)
    }


def _gate(entry: dict[str, Any]) -> Gate:
    measured = number(entry.get("measured"))
    limit = number(entry.get("limit"))
    return Gate(
        name=str(entry.get("name") or "gate"),
        measured=math.nan if measured is None else measured,
        limit=math.nan if limit is None else limit,
        passed=bool(entry.get("passed")),
    )


def _layer(entry: dict[str, Any]) -> Layer:
    sqnr = number(entry.get("sqnr_db"))
    return Layer(
        tensor=str(entry.get("tensor") or ""),
        node=str(entry.get("node") or ""),
        op_type=str(entry.get("op_type") or ""),
        sqnr_db=math.nan if sqnr is None else sqnr,
        local_sqnr_db=number(entry.get("local_sqnr_db")),
    )


def _merge_sizes(rows: Any, sizes: dict[str, Any]) -> None:
    """Encoder / decoder params and MACs from numerics.json's `sizes`, by each file's role."""
    for row in rows:
        role = "encoder" if row.role == "encoder" else "decoder"
        row.params = row.params or integer(sizes.get(f"params_{role}"))
        row.macs = row.macs or integer(sizes.get(f"macs_{role}"))


def _merge_latency(rows: dict[str, FileRow], run: Run) -> None:
    """perf.json's one-thread, best-runtime figure when benched, else the export's check."""
    for entry in _list((run.export_latency or {}).get("results")):
        if isinstance(entry, dict) and entry.get("file") in rows and number(entry.get("p50_us")):
            rows[entry["file"]].latency = Latency(
                source="export",
                runtime=str(entry.get("runtime") or "?"),
                threads=integer(entry.get("threads")) or 1,
                runs=integer(entry.get("runs")) or 0,
                p50_us=float(entry["p50_us"]),
                p90_us=number(entry.get("p90_us")),
            )
    if not run.perf:
        return
    threads = [t for t in _list(_dict(run.perf.get("settings")).get("threads")) if integer(t)]
    fewest = min(threads or [1])
    for record in _list(run.perf.get("results")):
        latency = _dict(record.get("latency_us")) if isinstance(record, dict) else {}
        if record.get("status") != "ok" or record.get("threads") != fewest or not latency:
            continue
        row = rows.get(str(record.get("artifact")))
        p50 = number(latency.get("p50"))
        if row is None or p50 is None:
            continue
        if row.latency and row.latency.source == "bench" and row.latency.p50_us <= p50:
            continue
        row.latency = Latency(
            source="bench",
            runtime=str(record.get("runtime") or "?"),
            threads=fewest,
            runs=len(_list(record.get("timings_us"))) or integer(record.get("runs")) or 0,
            p50_us=p50,
            p90_us=number(latency.get("p90")),
            p99_us=number(latency.get("p99")),
            timings_us=tuple(float(t) for t in _list(record.get("timings_us"))),
        )


def unique_labels(runs: list[Run]) -> None:
    """Give runs that would share a label (same model and CR) their folder name as well."""
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label_override = f"{run.label} ({run.directory.name})"
