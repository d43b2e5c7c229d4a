"""Reading, validating and hashing `manifest.json`, the bundle's contract with the handset team."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from csideploy.errors import BundleError

SCHEMA_VERSION = "1.0"
MANIFEST_NAME = "manifest.json"
MEASUREMENT_FILES = ("report.md", "report.html", "perf.json", "perf.export.json")
"""Files with timings: listed in `measurements`, not hashed, never packed (they differ run
to run, so hashing them would make every export's manifest and tarball differ)."""


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema shipped in the package."""
    text = resources.files("csideploy.bundle").joinpath("manifest.schema.json").read_text()
    return json.loads(text)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(root: Path, relpath: str) -> dict[str, Any]:
    """{path, sha256, bytes} for one file of the bundle."""
    path = root / relpath
    return {"path": relpath, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def validate_manifest(manifest: Any, *, source: str = MANIFEST_NAME) -> dict[str, Any]:
    """Check `manifest` against the schema; BundleError names the first offending field."""
    import jsonschema

    if not isinstance(manifest, dict):
        raise BundleError(f"{source}: expected a JSON object, got {type(manifest).__name__}")
    validator = jsonschema.Draft202012Validator(manifest_schema())
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        raise BundleError(f"{source}: invalid at {where}: {first.message[:200]}")
    return manifest


def parse_manifest(text: str | bytes, *, source: str = MANIFEST_NAME) -> dict[str, Any]:
    """Parse and validate manifest text; any defect becomes a BundleError."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise BundleError(f"{source}: not valid JSON ({error})") from None
    return validate_manifest(data, source=source)


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """Read and validate `<bundle_dir>/manifest.json`."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST_NAME} (is this a csideploy bundle?)")
    return parse_manifest(path.read_bytes(), source=str(path))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write sorted, indented JSON through a temporary file, so readers never see half a file."""
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def refresh_file_hashes(bundle_dir: Path) -> dict[str, Any]:
    """Re-hash every listed file (after e.g. `bench` rewrote report.md) and rewrite the manifest.

    New files that `bench` adds (perf.json) are listed too when present.
    """
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    listed = {entry["path"] for entry in manifest["files"]}
    measured = set(manifest.get("measurements", []))
    measured |= {p for p in MEASUREMENT_FILES if (bundle_dir / p).is_file()} - listed
    manifest["files"] = [file_entry(bundle_dir, rel) for rel in sorted(listed)]
    manifest["measurements"] = sorted(p for p in measured if (bundle_dir / p).is_file())
    manifest["bs_side"] = [
        file_entry(bundle_dir, entry["path"])
        for entry in manifest.get("bs_side", [])
        if (bundle_dir / entry["path"]).is_file()
    ]
    write_json_atomic(bundle_dir / MANIFEST_NAME, manifest)
    return manifest
