"""`csideploy verify`: re-check a bundle (directory or tarball) with numpy and a runtime only.

Checks, each reported per file: the manifest against the shipped schema, the sha256 and size
of every listed file, no unlisted files, then each artifact loaded in its runtime and run on
the golden inputs, compared with the expected outputs within the manifest's tolerance.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.bench import runner
from csideploy.bundle.golden import load_npy
from csideploy.bundle.manifest import MANIFEST_NAME, read_manifest, sha256_file
from csideploy.bundle.tarball import is_tarball, safe_extract
from csideploy.errors import BundleError

RUNTIMES = {"onnx": "onnxruntime", "tflite": "litert"}


@dataclass(frozen=True)
class Check:
    """One line of the verification report."""

    file: str
    check: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    bundle: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def verify_bundle(path: Path) -> VerifyReport:
    """Verify a bundle directory or a `.tar.gz` made by `csideploy pack`."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle directory or tarball")
    with _bundle_dir(path) as root:
        checks = [Check(MANIFEST_NAME, "schema", True, "valid")]
        manifest = _read_or_fail(root, checks)
        if manifest is not None:
            checks.extend(_check_hashes(root, manifest))
            hashes_ok = all(c.ok for c in checks if c.check == "sha256")
            for artifact in manifest["artifacts"]:
                checks.append(_check_golden(root, artifact, hashes_ok))
    return VerifyReport(str(path), tuple(checks))


@contextmanager
def _bundle_dir(path: Path) -> Iterator[Path]:
    if path.is_dir():
        yield path
        return
    if not is_tarball(path):
        raise BundleError(f"{path}: not a bundle directory or a .tar.gz tarball")
    with tempfile.TemporaryDirectory(prefix="csideploy-verify-") as tmp:
        yield safe_extract(path, Path(tmp))


def _read_or_fail(root: Path, checks: list[Check]) -> dict[str, Any] | None:
    try:
        return read_manifest(root)
    except BundleError as error:
        checks[0] = Check(MANIFEST_NAME, "schema", False, str(error))
        return None


def _check_hashes(root: Path, manifest: dict[str, Any]) -> list[Check]:
    checks = []
    listed = {entry["path"] for entry in manifest["files"]}
    bs_side = manifest.get("bs_side", [])
    present = [e for e in bs_side if (root / e["path"]).is_file()]
    for entry in [*manifest["files"], *present]:
        target = root / entry["path"]
        if not target.is_file():
            checks.append(Check(entry["path"], "sha256", False, "missing"))
            continue
        digest, size = sha256_file(target), target.stat().st_size
        ok = digest == entry["sha256"] and size == entry["bytes"]
        detail = (
            "matches"
            if ok
            else f"expected {entry['sha256'][:12]}… ({entry['bytes']} B), "
            f"found {digest[:12]}… ({size} B)"
        )
        checks.append(Check(entry["path"], "sha256", ok, detail))
    known = listed | {e["path"] for e in bs_side} | set(manifest.get("measurements", []))
    for extra in sorted(_all_files(root) - known - {MANIFEST_NAME}):
        checks.append(Check(extra, "listed", False, "file present but not in the manifest"))
    return checks


def _all_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _check_golden(root: Path, artifact: dict[str, Any], hashes_ok: bool) -> Check:
    name = artifact["file"]
    if not hashes_ok:
        return Check(name, "golden", False, "not run: the bundle's hashes do not match")
    runtime = RUNTIMES[artifact["format"]]
    names = [o["name"] for o in artifact.get("outputs", [])] or None
    try:
        outputs = run_artifact(
            runtime, root / name, load_npy(root / artifact["golden"]["inputs"]), names
        )
    except runner.Skip as reason:
        return Check(name, "golden", False, f"cannot run on {runtime}: {reason}")
    expected = load_npy(root / artifact["golden"]["outputs"])
    if outputs.shape != expected.shape:
        return Check(name, "golden", False, f"output shape {outputs.shape} != {expected.shape}")
    error = float(np.max(np.abs(outputs.astype(np.float64) - expected)))
    tolerance = float(artifact["tolerance"]["max_abs"])
    verdict = "within" if error <= tolerance else "exceeds"
    return Check(name, "golden", error <= tolerance, f"max-abs {error:.3g} {verdict} {tolerance:g}")


def run_artifact(
    runtime: str, path: Path, inputs: np.ndarray, output_names: Sequence[str] | None = None
) -> np.ndarray:
    """Float outputs of one artifact on `inputs`: every output as float (dequantized where
    the file quantizes it), flattened per sample and concatenated in `output_names` order (the
    file's order when not given)."""
    outputs = run_artifact_outputs(runtime, path, inputs, output_names)
    return np.concatenate([y.reshape(len(y), -1) for y in outputs], axis=1).astype(np.float32)


def run_artifact_outputs(
    runtime: str, path: Path, inputs: np.ndarray, output_names: Sequence[str] | None = None
) -> list[np.ndarray]:
    """Each output of one artifact on `inputs`, one sample at a time (fixed-batch safe)."""
    model = runner.open_model(runtime, path, threads=1, batch=1)
    spec = model.inputs[0]
    samples = runner.fit_layout(inputs.astype(np.float32), spec["shape"][1:], spec["name"])
    order = _output_order(model.outputs, output_names, path)
    rows: list[list[np.ndarray]] = [[] for _ in order]
    for k in range(len(samples)):
        feed = runner.to_input_dtype(samples[k : k + 1], spec)
        results = model([feed])
        for slot, index in enumerate(order):
            rows[slot].append(
                np.asarray(runner.as_float_output(results[index], model.outputs[index]))
            )
    return [np.concatenate(chunks) for chunks in rows]


def _output_order(
    specs: Sequence[dict[str, Any]], names: Sequence[str] | None, path: Path
) -> list[int]:
    if not names:
        return list(range(len(specs)))
    found = [s["name"] for s in specs]
    missing = [n for n in names if n not in found]
    if missing or len(names) != len(found):
        raise runner.Skip(f"{path.name} has outputs {found}, the manifest lists {list(names)}")
    return [found.index(n) for n in names]
