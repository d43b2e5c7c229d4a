"""`run_bench`: latency, memory and size of every artifact, on this machine or a target.

The timing itself is the standalone runner's (`csideploy/runner.py`), run in a
subprocess here, over ssh on a board, or under qemu in an arm64 root. This module prepares the
job (which files, which manifest), fills in what the runner cannot know without onnx (MACs
counted from the ONNX graph), times the torch encoder when asked, and writes `perf.json` plus
the ``## Latency`` section of `report.md`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csideploy import runner
from csideploy.bench.guard import check_threads, require_measured, require_verified
from csideploy.bench.remote import RunnerJob, run_local, run_qemu
from csideploy.bench.roofline import count_onnx_macs, sibling_onnx
from csideploy.bench.ssh import SshTarget, run_ssh
from csideploy.bench.torch_timing import TorchSettings, add_torch
from csideploy.errors import CsiDeployError, DataError
from csideploy.fileio import write_atomic

RUNTIMES = ("onnxruntime", "litert", "executorch", "torch")
PERF_FILE = "perf.json"
EMULATED_PERF_FILE = "perf.emulated.json"
"""Emulated runs go to their own file so they never replace a real measurement."""
BUNDLE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and where; validated on construction.

    `runtimes` holds ``auto`` (each file with its own runtime), ``onnxruntime``, ``litert``
    and/or ``torch``. `target` is ``local``, ``ssh://user@host[:port]`` or ``qemu:ROOT``.
    """

    runtimes: tuple[str, ...] = ("auto",)
    threads: tuple[int, ...] = (1,)
    batch: int = 1
    warmup: int = 20
    runs: int = 200
    target: str = "local"
    identity: str | None = None
    ssh_options: tuple[str, ...] = ()
    remote_python: str = "python3"
    include_decoder: bool = False
    inputs: Path | None = None
    save_outputs: Path | None = None
    roofline: bool = True
    timeout_s: float = 600.0
    ssh_timeout_s: float = 120.0
    """Bound on each ssh step other than the timed run (connect, key exchange, copy)."""

    def __post_init__(self) -> None:
        unknown = [r for r in self.runtimes if r not in (*RUNTIMES, "auto")]
        if unknown or not self.runtimes:
            raise CsiDeployError(
                f"unknown runtime {(unknown or [''])[0]!r}; choose from auto, "
                + ", ".join(RUNTIMES)
            )
        if not self.threads or min(self.threads) < 1:
            raise CsiDeployError(f"threads must be >= 1, got {list(self.threads)}")
        for key in ("batch", "runs"):
            if getattr(self, key) < 1:
                raise CsiDeployError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.warmup < 0:
            raise CsiDeployError(f"warmup must be >= 0, got {self.warmup}")
        if self.inputs is not None and not Path(self.inputs).is_file():
            raise DataError(f"--inputs {self.inputs}: no such file")
        target_kind(self.target)

    @property
    def file_runtimes(self) -> tuple[str, ...]:
        """The runtimes the runner handles (everything but torch), or ('none',)."""
        chosen = tuple(r for r in self.runtimes if r != "torch")
        return chosen or ("none",)


@dataclass(frozen=True)
class BenchResult:
    """The perf document and where it was written (None when `write=False`)."""

    perf: dict[str, Any]
    perf_path: Path | None = None
    report_path: Path | None = None

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per result, for a terminal table."""
        sizes = {a["name"]: a for a in self.perf.get("artifacts", [])}
        rows = []
        for record in self.perf.get("results", []):
            latency = record.get("latency_us") or {}
            artifact = sizes.get(record["artifact"], {})
            rows.append(
                {
                    "artifact": record["artifact"],
                    "runtime": record["runtime"],
                    "threads": record["threads"],
                    "status": record["status"],
                    "p50_us": latency.get("p50"),
                    "p99_us": latency.get("p99"),
                    "bytes": artifact.get("bytes"),
                    "p50_over_floor": record.get("p50_over_floor"),
                    "reason": record.get("reason"),
                }
            )
        return rows


def target_kind(target: str) -> str:
    """'local', 'ssh' or 'qemu'; CsiDeployError for anything else."""
    if target == "local":
        return "local"
    if target.startswith("ssh://"):
        return "ssh"
    if target.startswith("qemu:") and len(target) > len("qemu:"):
        return "qemu"
    raise CsiDeployError(f"target {target!r} is not local, ssh://user@host[:port] or qemu:ROOT")


def run_bench(
    path: str | os.PathLike[str],
    config: BenchConfig | None = None,
    *,
    out_dir: str | os.PathLike[str] | None = None,
    write: bool = True,
) -> BenchResult:
    """Measure every encoder file under `path` (a directory, a bundle .tar.gz or one file).

    Writes `perf.json` (`perf.emulated.json` for an emulated target) and the latency section
    of `report.md` into `out_dir`, by default the artifact directory (for a single file, its
    folder; for a bundle archive, a `<bundle>-bench` folder beside it). A bundle is verified
    first and its manifest is never rewritten; a run that measured nothing writes nothing.
    """
    config = config or BenchConfig()
    source = Path(path)
    if not source.exists():
        raise DataError(f"{source}: no such file or directory")
    check_threads(config.threads, target_kind(config.target))
    with _opened(source) as (root, files, manifest_path):
        require_verified(manifest_path)
        job = RunnerJob(
            files=tuple(files),
            root=root,
            manifest=manifest_path,
            runtimes=config.file_runtimes,
            threads=config.threads,
            batch=config.batch,
            warmup=config.warmup,
            runs=config.runs,
            inputs=config.inputs,
            save_outputs=config.save_outputs,
            include_decoder=config.include_decoder,
            roofline=config.roofline,
            timeout_s=config.timeout_s,
        )
        perf = _run_target(job, config)
        _fill_macs(perf, root, files)
        _fill_params(perf)
        if "torch" in config.runtimes:
            settings = TorchSettings(
                config.threads, config.batch, config.warmup, config.runs, config.timeout_s
            )
            local = target_kind(config.target) == "local"
            add_torch(perf, settings, manifest_path, local=local)
        _refresh_floors(perf, config.batch)
    if not write:
        return BenchResult(perf)
    require_measured(perf)
    destination = Path(out_dir) if out_dir else _default_out(source)
    perf_path = write_perf(perf, destination)
    from csideploy.report.render import write_latency_section

    report_path = write_latency_section(destination, perf)
    return BenchResult(perf, perf_path, report_path)


@contextmanager
def _opened(source: Path) -> Iterator[tuple[Path | None, list[Path], Path | None]]:
    """(root, files, manifest) for a directory, a single file or an extracted bundle."""
    if source.is_file() and source.name.lower().endswith(BUNDLE_SUFFIXES):
        with tempfile.TemporaryDirectory(prefix="csideploy-bundle-") as scratch:
            _extract_bundle(source, Path(scratch))
            inner = [p for p in Path(scratch).iterdir() if p.is_dir()]
            root = inner[0] if len(inner) == 1 else Path(scratch)
            yield _discovered(root)
        return
    yield _discovered(source)


def _discovered(source: Path) -> tuple[Path | None, list[Path], Path | None]:
    try:
        root, files = runner.discover([str(source)], include_decoder=True)
    except runner.BenchInputError as error:
        raise DataError(str(error)) from error
    folder = root if root else source.parent
    manifest = folder / "manifest.json"
    return root, files, manifest if manifest.is_file() else None


def _extract_bundle(archive: Path, destination: Path) -> None:
    """The archive's headers are checked (links, paths, sizes, its manifest) before a byte
    is written (`csideploy.bundle.tarball.safe_extract`)."""
    from csideploy.bundle.tarball import safe_extract

    safe_extract(archive, destination, require_manifest=False)


def _default_out(source: Path) -> Path:
    if source.is_dir():
        return source
    if source.name.lower().endswith(BUNDLE_SUFFIXES):
        stem = source.name
        for suffix in BUNDLE_SUFFIXES:
            stem = stem.removesuffix(suffix)
        return source.with_name(f"{stem}-bench")
    return source.parent


def _run_target(job: RunnerJob, config: BenchConfig) -> dict[str, Any]:
    kind = target_kind(config.target)
    if not config.include_decoder:
        kept = tuple(p for p in job.files if runner.artifact_role(p.name) != "decoder")
        if not kept:
            raise DataError(
                "only decoder files found (the BS-side graph); pass --include-decoder to time them"
            )
    if kind == "ssh":
        target = SshTarget.parse(
            config.target,
            identity=config.identity,
            options=config.ssh_options,
            python=config.remote_python,
            step_timeout_s=config.ssh_timeout_s,
        )
        return run_ssh(job, target)
    if kind == "qemu":
        return run_qemu(job, Path(config.target.removeprefix("qemu:")))
    perf = run_local(job)
    perf["target"] = {"kind": "local", "python": sys.executable}
    return perf


def _fill_macs(perf: dict[str, Any], root: Path | None, files: Sequence[Path]) -> None:
    """MACs counted from the ONNX graph, or a sibling ONNX for a .tflite: the manifest does
    not record them, and the standalone runner cannot count them without onnx."""
    by_name = {(p.relative_to(root).as_posix() if root else p.name): p for p in files}
    for entry in perf.get("artifacts", []):
        local = by_name.get(entry["name"])
        if local is None:
            continue
        onnx_file = local if local.suffix.lower() == ".onnx" else sibling_onnx(local)
        macs = count_onnx_macs(onnx_file) if onnx_file else None
        if macs:
            entry["macs"] = macs
            entry["macs_source"] = (
                "onnx graph" if onnx_file == local else f"onnx graph of {onnx_file.name}"
            )


def _fill_params(perf: dict[str, Any]) -> None:
    """Parameter counts of the zoo model the manifest names (`model.name`, `model.cr`): the
    manifest records no counts of its own."""
    from csideploy.models import build, list_models
    from csideploy.models.stats import count_params

    cache: dict[tuple[str, int], Any] = {}
    for entry in perf.get("artifacts", []):
        model, cr = entry.get("model"), entry.get("cr")
        if entry.get("params") or not model or not cr or str(model).lower() not in list_models():
            continue
        key = (str(model).lower(), int(cr))
        try:
            cache.setdefault(key, build(*key))
        except CsiDeployError:  # a CR the zoo does not have: leave the count unknown
            continue
        entry["params"] = count_params(getattr(cache[key], entry.get("role") or "encoder"))
        entry["params_source"] = f"zoo model {key[0]} CR 1/{key[1]}"


def _refresh_floors(perf: dict[str, Any], batch: int) -> None:
    entries = {a["name"]: a for a in perf.get("artifacts", [])}
    for record in perf.get("results", []):
        entry = entries.get(record["artifact"])
        if entry is not None:
            record.update(runner.floor_fields(record, entry, perf.get("roofline"), batch))


def write_perf(perf: dict[str, Any], destination: Path) -> Path:
    """`perf.json` (or `perf.emulated.json`) in `destination`, written atomically."""
    name = EMULATED_PERF_FILE if perf.get("emulated") else PERF_FILE
    return write_atomic(destination / name, json.dumps(perf, indent=1) + "\n")
