"""The manifest's own integrity: `MANIFEST.sha256` in the bundle, and a hash the integrator pins.

Every file of a bundle is hashed in the manifest, but the manifest is not hashed by anything
inside the bundle that a forger could not rewrite as well. `MANIFEST.sha256` catches a
manifest edited on its own; only a hash obtained from the producer by another channel and
passed as `verify --expect-sha256` anchors trust against a consistent forgery.
"""

from __future__ import annotations

import re
from pathlib import Path

from csideploy.bundle.checks import Check
from csideploy.bundle.manifest import MANIFEST_HASH_NAME, MANIFEST_NAME, sha256_file
from csideploy.errors import BundleError

_HASH_LINE = re.compile(r"^([0-9a-f]{64}) [ *]manifest\.json\n?$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def normalized_hash(text: str) -> str:
    """A 64-hex-digit sha256 as given on the command line (BundleError otherwise)."""
    value = text.strip().lower()
    if not _HEX.match(value):
        raise BundleError(f"--expect-sha256 {text!r} is not a 64-hex-digit sha256")
    return value


def check_manifest_hash(root: Path, expect_sha256: str | None) -> tuple[str | None, list[Check]]:
    """(the manifest's sha256, checks of MANIFEST.sha256 and of the pinned hash if given)."""
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        return None, []
    digest = sha256_file(manifest)
    checks = [_hash_file_check(root / MANIFEST_HASH_NAME, digest)]
    if expect_sha256 is not None:
        ok = digest == expect_sha256
        detail = (
            "matches the pinned sha256"
            if ok
            else (f"sha256 {digest} is not the pinned {expect_sha256}")
        )
        checks.append(Check(MANIFEST_NAME, "pinned", ok, detail))
    return digest, checks


def _hash_file_check(path: Path, digest: str) -> Check:
    if path.is_symlink() or not path.is_file():
        return Check(MANIFEST_HASH_NAME, "sha256", False, "missing")
    if path.stat().st_size > 200:
        return Check(MANIFEST_HASH_NAME, "sha256", False, "not a one-line sha256 file")
    match = _HASH_LINE.match(path.read_text(encoding="ascii", errors="replace"))
    if not match:
        return Check(MANIFEST_HASH_NAME, "sha256", False, "not '<sha256>  manifest.json'")
    ok = match.group(1) == digest
    detail = (
        "matches manifest.json"
        if ok
        else f"says {match.group(1)[:12]}…, manifest.json is {digest[:12]}…"
    )
    return Check(MANIFEST_HASH_NAME, "sha256", ok, detail)
