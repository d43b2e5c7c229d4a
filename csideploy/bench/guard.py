"""What `bench` checks before it measures and before it writes.

Measuring must never bless a file: a bundle is verified (hashes, contract, golden vectors)
before anything of it is timed, and `bench` never rewrites its manifest (timings live in
the unhashed measurement files). A run that measured nothing is an error, not a report, so
it leaves perf.json and report.md as they were. Thread counts above the machine's cores are
refused: they would time contention, not the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from csideploy.errors import CsiDeployError, DataError


def require_verified(manifest_path: Path | None) -> None:
    """BundleError unless the folder of `manifest_path`, when it is a bundle, verifies."""
    if manifest_path is None or not is_bundle_manifest(manifest_path):
        return
    from csideploy.bundle.verify import verify_bundle

    verify_bundle(manifest_path.parent).require_ok("bench measures only verified bundles")


def is_bundle_manifest(path: Path) -> bool:
    """Whether `path` claims to be a bundle manifest (it then has to verify)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return True  # unreadable: let verify say what is wrong with it
    return isinstance(data, dict) and "schema_version" in data


def check_threads(threads: tuple[int, ...], kind: str) -> None:
    """Thread counts must fit this machine's cores (local and emulated targets)."""
    cores = os.cpu_count() or 1
    if kind in ("local", "qemu") and max(threads) > cores:
        raise CsiDeployError(
            f"--threads {max(threads)}: this machine has {cores} cores; use at most {cores}"
        )


def require_measured(perf: dict[str, Any]) -> None:
    """DataError naming why, when no result has status ok (nothing is then written)."""
    results = perf.get("results", [])
    if any(record.get("status") == "ok" for record in results):
        return
    reasons = [f"{r.get('artifact')}: {r.get('reason')}" for r in results[:2]]
    detail = "; ".join(reasons) or "no artifact was run"
    raise DataError(f"nothing was measured ({detail}); perf.json and report.md left unchanged")
