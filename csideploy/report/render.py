"""report.md and report.html: latency, size and numerics of one or more artifact directories.

Reads what each directory holds — `perf.json` (from `csideploy bench`), `numerics.json` and
`manifest.json` (from `csideploy export`), the model files themselves — and tolerates any of
them missing or laid out differently from what is expected: a missing figure is a dash, never
a crash. Plots are drawn with matplotlib's Agg canvas (no pyplot, no global backend change):
one latency histogram per artifact and a Pareto plot of NMSE against latency, marker area
proportional to file size. The HTML embeds them as base64 PNG; the Markdown links the PNG files.

`report.md` may belong to another writer (the export recipe): this module only ever replaces
the block between ``<!-- csideploy:perf:begin -->`` and ``<!-- csideploy:perf:end -->``,
appending it when absent, and leaves the rest of the file as it was.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csideploy.bench import runner
from csideploy.bench.stats import format_bytes, format_us
from csideploy.errors import CsiDeployError, DataError

BLOCK_BEGIN = "<!-- csideploy:perf:begin -->"
BLOCK_END = "<!-- csideploy:perf:end -->"
PERF_FILES = ("perf.json", "perf.emulated.json")
PLOTS_DIR = "plots"
_NMSE_AVOID = ("float", "ref", "torch", "delta", "diff", "gap", "baseline", "tolerance")
_LABEL_KEYS = ("artifact", "file", "path", "name", "step", "stage", "format", "precision")


# --------------------------------------------------------------------------- loading


@dataclass
class ArtifactRun:
    """Everything known about one artifact directory."""

    directory: Path
    perf: dict[str, Any] | None = None
    emulated: dict[str, Any] | None = None
    manifest: Any = None
    numerics: Any = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    label_override: str | None = None

    @property
    def label(self) -> str:
        if self.label_override:
            return self.label_override
        model, cr = _model_and_cr(self)
        return f"{model}-cr{cr}" if model and cr else self.directory.name


def _read_json(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        problems.append(f"{path.name} is unreadable ({error}); left out")
        return None


def load_run(directory: str | os.PathLike[str]) -> ArtifactRun:
    """Read one directory: perf, emulated perf, manifest, numerics and the model files."""
    folder = Path(directory)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a directory")
    run = ArtifactRun(folder)
    run.perf = _read_json(folder / "perf.json", run.problems)
    run.emulated = _read_json(folder / "perf.emulated.json", run.problems)
    if run.perf is not None and run.perf.get("emulated"):
        run.emulated, run.perf = run.perf, None
    run.manifest = _read_json(folder / "manifest.json", run.problems)
    run.numerics = _read_json(folder / "numerics.json", run.problems)
    known = {a["name"]: a for a in ((run.perf or run.emulated or {}).get("artifacts") or [])}
    try:
        _, files = runner.discover([str(folder)], include_decoder=True)
    except runner.BenchInputError:
        files = []
    for path in files:
        name = path.relative_to(folder).as_posix()
        if name in known:
            continue
        role = runner.artifact_role(name)
        facts = runner.manifest_facts(run.manifest, name, role)
        known[name] = {
            "name": name,
            "path": str(path),
            "format": runner.FORMATS[path.suffix.lower()],
            "role": role,
            "precision": facts["precision"] or runner.artifact_precision(name),
            **runner.file_sizes(path),
            "params": facts["params"],
            "macs": facts["macs"],
            "model": facts["model"],
            "cr": facts["cr"],
        }
    run.artifacts = sorted(known.values(), key=lambda a: (a.get("role") != "encoder", a["name"]))
    if not run.artifacts and run.perf is None and run.numerics is None:
        raise DataError(
            f"{folder}: nothing to report (no .onnx/.tflite files, perf.json or numerics.json)"
        )
    return run


def _model_and_cr(run: ArtifactRun) -> tuple[str | None, int | None]:
    """Model and CR from the directory's manifest first, else from what the bench recorded."""
    if isinstance(run.manifest, dict):
        facts = runner.manifest_facts(run.manifest, "encoder", "encoder")
        if facts["model"] and facts["cr"]:
            return facts["model"], facts["cr"]
    for entry in run.artifacts:
        if entry.get("model") and entry.get("cr"):
            return entry["model"], entry["cr"]
    return None, None


def _unique_labels(runs: Sequence[ArtifactRun]) -> None:
    """Give runs that would share a label (same model and CR) their folder name as well."""
    labels = [run.label for run in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label_override = f"{run.label} ({run.directory.name})"


# --------------------------------------------------------------------------- numerics


_ARTIFACT_SUFFIXES = (".onnx", ".tflite")
_METRIC_WORDS = ("nmse", "error", "abs", "sqnr", "rho", "delta", "diff", "max", "mean", "cos")


def _names_artifact(section: dict[str, Any]) -> str | None:
    for key in _LABEL_KEYS:
        value = section.get(key)
        if isinstance(value, str) and value.lower().endswith(_ARTIFACT_SUFFIXES):
            return Path(value).name
    return None


def _scalar_metrics(section: dict[str, Any], metric_only: bool) -> dict[str, Any]:
    return {
        key: value
        for key, value in section.items()
        if _is_number(value)
        and (not metric_only or any(word in str(key).lower() for word in _METRIC_WORDS))
    }


def numerics_records(numerics: Any) -> list[tuple[str, dict[str, Any]]]:
    """(label, {metric: value}) rows of numerics.json, in any layout.

    Records that name an artifact file (a `file` / `artifact` / `path` / `name` ending in
    .onnx or .tflite, or a key that is such a file name) come first and alone when present,
    with their metric-like numbers and a `gates` verdict when they carry gate results.
    Otherwise every dict holding metric-like numbers is a row, labelled by its key path.
    """
    per_artifact = []
    for trail, section in runner._walk(numerics):
        name = _names_artifact(section)
        if name is None and trail and trail[-1].lower().endswith(_ARTIFACT_SUFFIXES):
            name = Path(trail[-1]).name
        if name is None:
            continue
        metrics = _scalar_metrics(section, metric_only=True)
        gates = section.get("gates")
        if isinstance(gates, list) and gates and all(isinstance(g, dict) for g in gates):
            metrics["gates"] = "passed" if all(g.get("passed") for g in gates) else "FAILED"
        elif isinstance(section.get("passed"), bool):
            metrics["gates"] = "passed" if section["passed"] else "FAILED"
        if metrics:
            per_artifact.append((name, metrics))
    if per_artifact:
        return per_artifact
    records = []
    for trail, section in runner._walk(numerics):
        metrics = _scalar_metrics(section, metric_only=True)
        if metrics:
            label = " / ".join(t for t in trail if not t.isdigit())
            records.append((label or "numerics", metrics))
    return records


def nmse_for(numerics: Any, artifact: str) -> float | None:
    """The artifact's NMSE in dB from numerics.json, or None (any layout, best effort)."""
    name = Path(artifact).name
    stem = name.rsplit(".", 1)[0]
    best: float | None = None
    for trail, section in runner._walk(numerics):
        mentions = [str(v) for v in section.values() if isinstance(v, str)] + list(trail)
        if not any(Path(m).name in (name, stem) for m in mentions):
            continue
        keys = [k for k, v in section.items() if "nmse" in k.lower() and _is_number(v)]
        preferred = [k for k in keys if not any(a in k.lower() for a in _NMSE_AVOID)]
        for key in preferred or keys:
            best = float(section[key])
            break
        if best is not None:
            return best
    return best


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- tables


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt_int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "-"


def _fmt_ms(value: Any) -> str:
    return f"{value:.1f} ms" if _is_number(value) else "-"


def _fmt_number(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


LATENCY_HEADER = (
    "artifact",
    "runtime",
    "threads",
    "p50",
    "p90",
    "p99",
    "mean ± std",
    "init",
    "first run",
    "peak RSS",
    "floor",
    "p50 / floor",
)


def latency_rows(perf: dict[str, Any], prefix: str = "") -> list[list[str]]:
    rows = []
    for record in perf.get("results", []):
        name = prefix + record["artifact"]
        latency = record.get("latency_us")
        if record.get("status") != "ok" or not latency:
            reason = record.get("reason") or record.get("status")
            rows.append(
                [name, record["runtime"], record["threads"], f"{record['status']}: {reason}"]
                + ["" for _ in LATENCY_HEADER[4:]]
            )
            continue
        floor = record.get("floor") or {}
        ratio = record.get("p50_over_floor")
        rows.append(
            [
                name,
                record["runtime"],
                record["threads"],
                format_us(latency["p50"]),
                format_us(latency["p90"]),
                format_us(latency["p99"]),
                f"{format_us(latency['mean'])} ± {format_us(latency['std'])}",
                _fmt_ms(record.get("init_ms")),
                _fmt_ms(record.get("first_inference_ms")),
                format_bytes(record.get("peak_rss_bytes")),
                f"{format_us(floor.get('floor_us'))} ({floor.get('bound')})" if floor else "-",
                f"{ratio:.1f}x" if _is_number(ratio) else "-",
            ]
        )
    return rows


SIZE_HEADER = ("artifact", "role", "precision", "bytes", "gzip", "params", "MACs")


def size_rows(run: ArtifactRun, prefix: str = "") -> list[list[str]]:
    return [
        [
            prefix + a["name"],
            a.get("role") or "-",
            a.get("precision") or "-",
            format_bytes(a.get("bytes")),
            format_bytes(a.get("gzip_bytes")),
            _fmt_int(a.get("params")),
            _fmt_int(a.get("macs")),
        ]
        for a in run.artifacts
        if a.get("format") != "torch"
    ]


def machine_line(perf: dict[str, Any]) -> str:
    machine = perf.get("machine") or {}
    target = perf.get("target")
    where = target.get("url") or target.get("kind") if isinstance(target, dict) else target
    runtimes = ", ".join(f"{k} {v}" for k, v in (machine.get("runtimes") or {}).items())
    return (
        f"{machine.get('cpu_model', 'unknown CPU')}, {machine.get('cores', '?')} cores, "
        f"{machine.get('machine', '?')}, Python {machine.get('python', '?')}, "
        f"numpy {machine.get('numpy', '?')}"
        + (f", {runtimes}" if runtimes else "")
        + (f" (target: {where})" if where and where != "local" else "")
    )


def roofline_line(perf: dict[str, Any]) -> str | None:
    roof = perf.get("roofline")
    if not roof:
        return None
    return (
        f"Roofline of this machine (one thread): peak {roof['peak_macs_per_s'] / 1e9:.1f} GMAC/s "
        f"(float32 matmul), memory bandwidth {roof['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s "
        f"(64 MiB copy). The floor is max(MACs / peak, weight bytes / bandwidth): a lower "
        "bound on latency, not a prediction; INT8 files use four times the float32 peak."
    )


def latency_markdown(runs: Sequence[ArtifactRun]) -> str:
    """The ``## Latency`` section: machine, roofline and the latency table of every run."""
    several = len(runs) > 1
    parts = ["## Latency", ""]
    measured = False
    for run in runs:
        prefix = f"{run.label}/" if several else ""
        if run.perf:
            measured = True
            settings = run.perf.get("settings", {})
            parts += [
                f"Measured on {machine_line(run.perf)}; batch {settings.get('batch')}, "
                f"{settings.get('warmup')} warm-up and {settings.get('runs')} timed runs "
                f"({run.perf.get('created', '')}).",
                "",
            ]
            roof = roofline_line(run.perf)
            if roof:
                parts += [roof, ""]
            parts += [_md_table(LATENCY_HEADER, latency_rows(run.perf, prefix)), ""]
        if run.emulated:
            parts += [_emulated_note(run, prefix), ""]
    if not measured and not any(r.emulated for r in runs):
        parts += ["No latency measured yet: run `csideploy bench DIR`.", ""]
    return "\n".join(parts).rstrip() + "\n"


def _emulated_note(run: ArtifactRun, prefix: str) -> str:
    perf = run.emulated or {}
    ok = [r for r in perf.get("results", []) if r.get("status") == "ok"]
    machine = (perf.get("machine") or {}).get("machine", "?")
    names = ", ".join(sorted({prefix + r["artifact"] for r in ok})) or "none"
    return (
        f"Emulated run ({machine}, {perf.get('emulation') or 'emulated'}): the files loaded and "
        f"ran ({names}); timings under emulation are not latency and are omitted."
    )


# --------------------------------------------------------------------------- markdown block


def replace_block(text: str, body: str) -> str:
    """`text` with the csideploy perf block replaced by `body` (appended when absent)."""
    block = f"{BLOCK_BEGIN}\n{body.rstrip()}\n{BLOCK_END}\n"
    start = text.find(BLOCK_BEGIN)
    end = text.find(BLOCK_END, start + 1) if start >= 0 else -1
    if start >= 0 and end >= 0:
        return text[:start] + block + text[end + len(BLOCK_END) :].lstrip("\n")
    if text and not text.endswith("\n"):
        text += "\n"
    return text + ("\n" if text else "") + block


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `path` through a temporary sibling and a rename, with the usual permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    encoding = None if isinstance(data, bytes) else "utf-8"
    with tempfile.NamedTemporaryFile(
        mode,
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=".tmp",
        delete=False,
        encoding=encoding,
    ) as handle:
        handle.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(handle.name, 0o666 & ~umask)
    os.replace(handle.name, path)
    return path


def update_report_md(path: Path, body: str) -> Path:
    """Replace (or append) the perf block of `path`, leaving the rest of the file alone."""
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    write_atomic(path, replace_block(existing, body))
    return path


def write_latency_section(directory: str | os.PathLike[str], perf: dict[str, Any]) -> Path:
    """The ``## Latency`` block of `directory/report.md` from one perf document."""
    folder = Path(directory)
    run = ArtifactRun(folder, manifest=_read_json(folder / "manifest.json", []))
    if perf.get("emulated"):
        run.emulated = perf
    else:
        run.perf = perf
    run.artifacts = list(perf.get("artifacts") or [])
    return update_report_md(folder / "report.md", latency_markdown([run]))


# --------------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def histogram_png(run: ArtifactRun, artifact: str, path: Path) -> Path | None:
    """Histogram of per-run latency of one artifact, one outline per runtime x threads."""
    import numpy as np

    records = [
        r
        for r in (run.perf or {}).get("results", [])
        if r["artifact"] == artifact and r.get("status") == "ok" and r.get("timings_us")
    ]
    if not records:
        return None
    figure = _figure(6.4, 3.6)
    axes = figure.add_subplot()
    everything = np.concatenate([np.asarray(r["timings_us"], dtype=float) for r in records])
    # The body of the distribution: up to p99, but no further than 3x the median, so that a
    # few scheduler stalls do not squeeze every run into one bin.
    p50, p90, p99 = np.percentile(everything, [50, 90, 99])
    low, high = float(everything.min()), float(max(min(p99, 3 * p50), p90))
    high = max(high, low * 1.01 + 1e-9)
    bins = np.linspace(low, high, 50)
    hidden = 0
    for index, record in enumerate(records):
        timings = np.asarray(record["timings_us"], dtype=float)
        hidden += int((timings > high).sum())
        color = f"C{index % 10}"
        stats = record["latency_us"]
        label = (
            f"{record['runtime']}, {record['threads']} thread(s): "
            f"p50 {format_us(stats['p50'])}, p99 {format_us(stats['p99'])}"
        )
        axes.hist(
            timings[timings <= high],
            bins=bins,
            histtype="step",
            linewidth=1.6,
            color=color,
            label=label,
        )
        axes.axvline(stats["p50"], color=color, linestyle="--", linewidth=1)
    axes.set_xlabel("latency per run (µs)")
    axes.set_ylabel("runs")
    title = f"{run.label}: {artifact}"
    if hidden:
        title += f"\n{hidden} of {everything.size} runs above {format_us(high)} not shown"
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper right")
    axes.grid(alpha=0.3)
    return _png(figure, path)


def pareto_points(runs: Sequence[ArtifactRun]) -> list[dict[str, Any]]:
    """(latency, NMSE, bytes, label) of every measured file: one thread, best runtime each."""
    points = []
    for run in runs:
        if not run.perf:
            continue
        sizes = {a["name"]: a for a in run.artifacts}
        best: dict[str, dict[str, Any]] = {}
        for record in run.perf.get("results", []):
            latency = record.get("latency_us")
            if record.get("status") != "ok" or not latency:
                continue
            if record["threads"] != min(run.perf["settings"].get("threads") or [1]):
                continue
            key = record["artifact"]
            if key not in best or latency["p50"] < best[key]["latency_us"]["p50"]:
                best[key] = record
        for name, record in best.items():
            entry = sizes.get(name, {})
            points.append(
                {
                    "label": f"{run.label} {entry.get('precision') or ''} {record['runtime']}",
                    "artifact": name,
                    "run": run.label,
                    "p50_us": record["latency_us"]["p50"],
                    "nmse_db": nmse_for(run.numerics, name) if run.numerics else None,
                    "bytes": entry.get("bytes"),
                }
            )
    return points


def pareto_png(runs: Sequence[ArtifactRun], path: Path) -> Path | None:
    """NMSE (dB) against p50 latency, marker area by file size, the Pareto front drawn.

    Without any NMSE figure the y axis becomes file size, so the plot still shows the
    latency / size trade-off.
    """
    points = pareto_points(runs)
    if not points:
        return None
    with_nmse = [p for p in points if p["nmse_db"] is not None]
    use_nmse = bool(with_nmse)
    shown = with_nmse if use_nmse else [p for p in points if p["bytes"]]
    if not shown:
        return None
    figure = _figure(7.2, 4.8)
    axes = figure.add_subplot()
    largest = max(p["bytes"] or 1 for p in shown)
    runs_seen = list(dict.fromkeys(p["run"] for p in shown))
    # Colour names the run (legend); the label names the file, short, at alternating offsets
    # so that neighbours (an fp32 and an INT8 file of one model) stay readable.
    offsets = ((14, 14, "left"), (14, -20, "left"), (-14, 14, "right"), (-14, -20, "right"))
    ordered = sorted(shown, key=lambda p: (p["p50_us"], p["nmse_db"] or 0))
    for rank, point in enumerate(ordered):
        y = point["nmse_db"] if use_nmse else point["bytes"] / 1024
        area = 40 + 900 * (point["bytes"] or 0) / largest
        color = f"C{runs_seen.index(point['run']) % 10}"
        axes.scatter(point["p50_us"], y, s=area, color=color, alpha=0.55, edgecolors="black")
        dx, dy, align = offsets[rank % len(offsets)]
        axes.annotate(
            _short_label(point["artifact"], point["label"]),
            (point["p50_us"], y),
            textcoords="offset points",
            xytext=(dx, dy),
            ha=align,
            fontsize=7,
            color="black",
            arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.6},
        )
    front = _front([(p["p50_us"], p["nmse_db"] if use_nmse else p["bytes"]) for p in shown])
    if len(front) > 1:
        xs, ys = zip(*front, strict=True)
        ys = [y if use_nmse else y / 1024 for y in ys]
        axes.step(xs, ys, where="post", color="grey", linestyle=":", label="Pareto front")
    for index, name in enumerate(runs_seen):
        axes.scatter([], [], color=f"C{index % 10}", alpha=0.55, label=name)
    axes.set_xlabel("p50 latency, batch 1, one thread (µs)")
    axes.set_ylabel("NMSE (dB, lower is better)" if use_nmse else "file size (KiB)")
    title = (
        "NMSE vs latency (marker area = file size)"
        if use_nmse
        else ("File size vs latency (no NMSE in numerics.json; marker area = file size)")
    )
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="best")
    axes.grid(alpha=0.3)
    axes.margins(0.25)
    return _png(figure, path)


_RUNTIME_SHORT = {"onnxruntime": "ORT", "litert": "LiteRT", "torch": "torch"}


def _short_label(artifact: str, label: str) -> str:
    """'int8 .onnx ORT' from the file name and the point's 'run precision runtime' label."""
    parts = label.split()
    runtime = _RUNTIME_SHORT.get(parts[-1], parts[-1]) if parts else ""
    precision = parts[-2] if len(parts) >= 2 else ""
    suffix = Path(artifact).suffix or artifact
    return f"{precision} {suffix} {runtime}".strip()


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both latency and the y value (lower is better)."""
    front = []
    best_y = math.inf
    for x, y in sorted(points):
        if y < best_y:
            front.append((x, y))
            best_y = y
    return front


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class ReportFiles:
    """What `render_report` wrote."""

    html: Path
    markdown: Path
    plots: tuple[Path, ...]
    problems: tuple[str, ...] = ()


def numerics_markdown(runs: Sequence[ArtifactRun]) -> str | None:
    rows, header = _numerics_table(runs)
    if not rows:
        return None
    return "## Numerics\n\n" + _md_table(header, rows) + "\n"


def _numerics_table(runs: Sequence[ArtifactRun]) -> tuple[list[list[str]], list[str]]:
    several = len(runs) > 1
    collected = []
    for run in runs:
        for label, metrics in numerics_records(run.numerics) if run.numerics else []:
            collected.append(((f"{run.label}: " if several else "") + label, metrics))
    if not collected:
        return [], []
    keys = list(dict.fromkeys(k for _, m in collected for k in m))[:10]
    rows = [[label] + [_fmt_number(m[k]) if k in m else "" for k in keys] for label, m in collected]
    return rows, ["artifact", *keys]


def render_report(
    directories: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
) -> ReportFiles:
    """Write report.html, the perf block of report.md and the PNG plots.

    With one directory the report goes into it by default; with several, `out_dir` is
    required (one report compares them all).
    """
    if not directories:
        raise CsiDeployError("report needs at least one artifact directory")
    if out_dir is None and len(directories) > 1:
        raise CsiDeployError("several directories need --out DIR for the combined report")
    runs = [load_run(d) for d in directories]
    _unique_labels(runs)
    if out_dir is None:
        out_dir = runs[0].directory
    out = Path(out_dir)
    plots: list[Path] = []
    histograms: list[tuple[str, Path]] = []
    for run_index, run in enumerate(runs):
        for entry in run.artifacts:
            stem = runner.output_stem(entry["name"])
            name = f"latency_{run_index}_{stem}.png" if len(runs) > 1 else f"latency_{stem}.png"
            png = histogram_png(run, entry["name"], out / PLOTS_DIR / name)
            if png:
                histograms.append((f"{run.label}: {entry['name']}", png))
                plots.append(png)
    pareto = pareto_png(runs, out / PLOTS_DIR / "pareto.png")
    if pareto:
        plots.append(pareto)
    markdown = _markdown(runs, out, pareto, histograms)
    md_path = update_report_md(out / "report.md", markdown)
    html_path = out / "report.html"
    write_atomic(html_path, _html(runs, pareto, histograms))
    problems = tuple(p for run in runs for p in run.problems)
    return ReportFiles(html_path, md_path, tuple(plots), problems)


def _markdown(
    runs: Sequence[ArtifactRun], out: Path, pareto: Path | None, histograms: list[tuple[str, Path]]
) -> str:
    several = len(runs) > 1
    parts = [latency_markdown(runs)]
    size_rows_all = [
        row for run in runs for row in size_rows(run, f"{run.label}/" if several else "")
    ]
    if size_rows_all:
        parts.append("## Size\n\n" + _md_table(SIZE_HEADER, size_rows_all) + "\n")
    numerics = numerics_markdown(runs)
    if numerics:
        parts.append(numerics)
    figures = []
    if pareto:
        figures.append(f"![Pareto: NMSE vs latency vs size]({pareto.relative_to(out).as_posix()})")
    figures += [
        f"![latency of {label}]({png.relative_to(out).as_posix()})" for label, png in histograms
    ]
    if figures:
        parts.append("## Plots\n\n" + "\n\n".join(figures) + "\n")
    problems = [p for run in runs for p in run.problems]
    if problems:
        parts.append("Notes: " + "; ".join(problems) + "\n")
    return "\n".join(parts)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.4em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }
.note { color: #555; font-size: 0.92em; }
"""


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(png: Path, alt: str) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html(
    runs: Sequence[ArtifactRun], pareto: Path | None, histograms: list[tuple[str, Path]]
) -> str:
    several = len(runs) > 1
    title = "csideploy report: " + ", ".join(run.label for run in runs)
    parts = [f"<h1>{html.escape(title)}</h1>", "<h2>Latency</h2>"]
    for run in runs:
        prefix = f"{run.label}/" if several else ""
        if run.perf:
            settings = run.perf.get("settings", {})
            parts.append(
                f"<p>Measured on {html.escape(machine_line(run.perf))}; batch "
                f"{settings.get('batch')}, {settings.get('warmup')} warm-up and "
                f"{settings.get('runs')} timed runs.</p>"
            )
            roof = roofline_line(run.perf)
            if roof:
                parts.append(f'<p class="note">{html.escape(roof)}</p>')
            parts.append(_html_table(LATENCY_HEADER, latency_rows(run.perf, prefix)))
        if run.emulated:
            parts.append(f'<p class="note">{html.escape(_emulated_note(run, prefix))}</p>')
        if not run.perf and not run.emulated:
            parts.append(f"<p>{html.escape(run.label)}: no perf.json; run csideploy bench.</p>")
    sizes = [row for run in runs for row in size_rows(run, f"{run.label}/" if several else "")]
    if sizes:
        parts += ["<h2>Size</h2>", _html_table(SIZE_HEADER, sizes)]
    rows, header = _numerics_table(runs)
    if rows:
        parts += ["<h2>Numerics</h2>", _html_table(header, rows)]
    if pareto or histograms:
        parts.append("<h2>Plots</h2>")
    if pareto:
        parts.append(_img(pareto, "Pareto: NMSE vs latency vs size"))
    parts += [_img(png, f"latency histogram of {label}") for label, png in histograms]
    problems = [p for run in runs for p in run.problems]
    if problems:
        parts.append(f'<p class="note">Notes: {html.escape("; ".join(problems))}</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
