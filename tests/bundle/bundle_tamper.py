"""Helpers of the bundle tests that tamper with a copy of a real bundle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def tree(root: Path) -> dict[str, bytes]:
    """Every file below `root` with its bytes (to assert nothing was created or changed)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def load_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def save_manifest(bundle: Path, manifest: dict, *, rehash: bool = True) -> str:
    """Write a tampered manifest; with `rehash` also a matching MANIFEST.sha256 (a forger who
    knows the format). Returns the new manifest's sha256."""
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    if rehash:
        (bundle / "MANIFEST.sha256").write_text(f"{digest}  manifest.json\n")
    return digest


def rehash(bundle: Path, manifest: dict, rel: str) -> None:
    """Make the manifest's entry for `rel` match the file as it now is."""
    data = (bundle / rel).read_bytes()
    for entry in manifest["files"]:
        if entry["path"] == rel:
            entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
