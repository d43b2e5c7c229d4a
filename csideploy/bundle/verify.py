"""`csideploy verify`: re-check a bundle (directory or tarball) with numpy and a runtime only.

Checks, each reported per file: the manifest against the shipped schema and its own hash
(`MANIFEST.sha256`, and the hash the integrator pins with `expect_sha256`), the facts it
states twice, the sha256 and size of every listed file, no unlisted files or links, then each
artifact: its declared interface against the file itself, and its golden vectors, in every
form the bundle ships, recomputed within a bounded tolerance.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from csideploy.bundle.artifact_check import check_artifact
from csideploy.bundle.checks import Check, printable
from csideploy.bundle.contract import declaration_problems
from csideploy.bundle.execute import RUNTIMES, run_artifact, run_artifact_outputs
from csideploy.bundle.integrity import check_manifest_hash
from csideploy.bundle.manifest import (
    MANIFEST_HASH_NAME,
    MANIFEST_NAME,
    is_measurement,
    read_manifest,
    sha256_file,
)
from csideploy.bundle.tarball import is_tarball, safe_extract
from csideploy.errors import BundleError

__all__ = [
    "RUNTIMES",
    "Check",
    "VerifyReport",
    "run_artifact",
    "run_artifact_outputs",
    "verify_bundle",
]


@dataclass(frozen=True)
class VerifyReport:
    bundle: str
    checks: tuple[Check, ...]
    manifest_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def require_ok(self, consequence: str) -> None:
        """BundleError naming the first failure and `consequence`, unless every check passed."""
        if self.ok:
            return
        first = self.failures[0]
        raise BundleError(
            f"{self.bundle} does not verify ({len(self.failures)} check(s) failed, first: "
            f"{printable(first.file)}: {printable(first.detail)}); {consequence}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "ok": self.ok,
            "manifest_sha256": self.manifest_sha256,
            "checks": [asdict(c) for c in self.checks],
        }


def verify_bundle(path: Path, *, expect_sha256: str | None = None) -> VerifyReport:
    """Verify a bundle directory or a `.tar.gz` made by `csideploy pack`.

    `expect_sha256` is the manifest's sha256 as the producer published it: the one check a
    consistent forgery (files, hashes and golden vectors all rewritten) cannot pass.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle directory or tarball")
    with _bundle_dir(path) as root:
        checks = [Check(MANIFEST_NAME, "schema", True, "valid")]
        manifest = _read_or_fail(root, checks)
        digest, hash_checks = check_manifest_hash(root, expect_sha256)
        checks.extend(hash_checks)
        if manifest is not None:
            problems = declaration_problems(manifest)
            detail = "; ".join(problems) or "stated facts agree"
            checks.append(Check(MANIFEST_NAME, "contract", not problems, detail))
            checks.extend(_check_hashes(root, manifest))
            hashes_ok = all(c.ok for c in checks if c.check == "sha256")
            for artifact in manifest["artifacts"]:
                checks.extend(check_artifact(root, manifest, artifact, hashes_ok))
    return VerifyReport(str(path), tuple(checks), digest)


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
    """sha256 and size of every listed file; nothing else but the manifest, its hash and the
    fixed measurement names may sit in the bundle, and nothing may be a link."""
    checks = []
    bs_side = manifest.get("bs_side", [])
    present = [e for e in bs_side if (root / e["path"]).is_file()]
    for entry in [*manifest["files"], *present]:
        target = root / entry["path"]
        if target.is_symlink() or not target.is_file():
            checks.append(Check(entry["path"], "sha256", False, "missing or not a regular file"))
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
    known = {e["path"] for e in [*manifest["files"], *bs_side]}
    known |= {MANIFEST_NAME, MANIFEST_HASH_NAME}
    entries = _all_entries(root)
    known |= {p for p in entries if is_measurement(p)}
    for extra in sorted(entries - known):
        what = "a link" if (root / extra).is_symlink() else "present but not in the manifest"
        checks.append(Check(extra, "listed", False, what))
    for link in sorted(p for p in known if (root / p).is_symlink()):
        checks.append(Check(link, "listed", False, "a link"))
    return checks


def _all_entries(root: Path) -> set[str]:
    """Every file and link (links are never followed) below `root`."""
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink() or not p.is_dir()
    }
