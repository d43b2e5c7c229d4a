"""Reading, validating and hashing `manifest.json`, the bundle's contract with the handset team."""

from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from csideploy.errors import BundleError
from csideploy.fileio import write_atomic

SCHEMA_VERSION = "1.0"
MANIFEST_NAME = "manifest.json"
MANIFEST_HASH_NAME = "MANIFEST.sha256"
"""`<sha256>  manifest.json`, as sha256sum writes it: the manifest's own hash."""
MEASUREMENT_FILES = (
    "report.md",
    "report.html",
    "perf.json",
    "perf.export.json",
    "perf.emulated.json",
)
"""Files with timings: never hashed, never packed (they differ run to run, so hashing them
would make every export's manifest and tarball differ). Only these names may be unhashed:
the schema allows no other name under `measurements`, and `verify` fails any other
unlisted file."""
PLOT_PATTERN = re.compile(r"^plots/[A-Za-z0-9_.-]+\.png$")
"""`csideploy report` adds latency plots under plots/: measurements too (never packed)."""
MAX_MANIFEST_BYTES = 4 << 20
"""A manifest is a few tens of kB; anything above this is refused unread."""


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema shipped in the package."""
    text = resources.files("csideploy.bundle").joinpath("manifest.schema.json").read_text()
    return json.loads(text)


def is_measurement(relpath: str) -> bool:
    """A file that holds timings: unhashed, never packed, allowed beside a bundle's files."""
    return relpath in MEASUREMENT_FILES or bool(PLOT_PATTERN.match(relpath))


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
        data = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise BundleError(f"{source}: not valid JSON ({error})") from None
    return validate_manifest(data, source=source)


def _refuse_constant(name: str) -> float:
    """json.loads hook: NaN and Infinity are not JSON and would defeat tolerance bounds."""
    raise ValueError(f"{name} is not allowed")


def read_manifest(bundle_dir: Path) -> dict[str, Any]:
    """Read and validate `<bundle_dir>/manifest.json`."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir}: no {MANIFEST_NAME} (is this a csideploy bundle?)")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: larger than {MAX_MANIFEST_BYTES >> 20} MiB; refusing it")
    return parse_manifest(path.read_bytes(), source=str(path))


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write sorted, indented JSON through the project's atomic writer (a temporary sibling
    and a rename, with the permissions an ordinary file gets), so readers never see half a
    file and the manifest is as readable as every other file of the bundle."""
    write_atomic(Path(path), json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> str:
    """Validate and write `manifest.json`, then `MANIFEST.sha256` beside it; return the hash.

    The hash file lets an integrator pin the manifest (`verify --expect-sha256`); inside the
    bundle it only catches a manifest edited without it.
    """
    validate_manifest(manifest)
    bundle_dir = Path(bundle_dir)
    write_json_atomic(bundle_dir / MANIFEST_NAME, manifest)
    digest = sha256_file(bundle_dir / MANIFEST_NAME)
    write_atomic(bundle_dir / MANIFEST_HASH_NAME, f"{digest}  {MANIFEST_NAME}\n")
    return digest
