"""What csideploy may replace: only its own outputs, never what a user keeps beside them.

`export --force` and `pack --out` overwrite a path the user named. A directory is replaced
only when it is recognisably a csideploy export (its `manifest.json` is one of ours) and holds
nothing but what that manifest lists, its hash and measurement files; an empty directory
holds nothing to lose. A tarball is replaced only when it is a csideploy bundle tarball.
Anything else is refused with the path named, so a typo in `--out` cannot delete a thesis.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from csideploy.bundle.manifest import (
    MANIFEST_HASH_NAME,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    is_measurement,
)
from csideploy.errors import BundleError, CsiDeployError, OutputExistsError

EXPORT_FORMAT = "csideploy-export"
"""The `format` of the export writer's first manifest (before the bundle step)."""
TARBALL_SCAN_MEMBERS = 4096


def check_replaceable_dir(target: Path) -> None:
    """Return if `target` may be replaced by a new export; OutputExistsError naming it if not."""
    target = Path(target)
    if target.is_symlink() or not target.is_dir():
        raise OutputExistsError(f"output path {target} exists and is not a directory")
    if not any(target.iterdir()):
        return
    manifest = _our_manifest(target)
    if manifest is None:
        raise OutputExistsError(
            f"{target} exists and is not a csideploy bundle (no csideploy manifest.json); "
            "refusing to replace it: move it away or choose another --out"
        )
    known = {entry.get("path") for key in ("files", "bs_side") for entry in _entries(manifest, key)}
    known |= {MANIFEST_NAME, MANIFEST_HASH_NAME}
    foreign = sorted(
        rel for rel in _entries_below(target) if rel not in known and not is_measurement(rel)
    )
    if foreign:
        shown = ", ".join(repr(f) for f in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise OutputExistsError(
            f"{target} holds files its manifest does not list ({shown}); refusing to replace "
            "it: move them away first"
        )


def _our_manifest(directory: Path) -> dict[str, Any] | None:
    """The directory's manifest when it is one csideploy writes, else None."""
    path = directory / MANIFEST_NAME
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_MANIFEST_BYTES:
        return None
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("schema_version") is None and data.get("format") != EXPORT_FORMAT:
        return None
    return data


def _entries(manifest: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = manifest.get(key)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _entries_below(root: Path) -> list[str]:
    """Every file and link below `root` (links are never followed)."""
    found = []
    for folder, directories, files in os.walk(root):
        for name in files + [d for d in directories if (Path(folder) / d).is_symlink()]:
            found.append((Path(folder) / name).relative_to(root).as_posix())
    return found


def check_pack_target(target: Path, bundle_dir: Path) -> Path:
    """The absolute tarball path `pack` may write; BundleError / OutputExistsError if not."""
    target = Path(target).expanduser().absolute()
    parent = target.parent
    if not parent.is_dir():
        raise CsiDeployError(f"cannot write {target}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CsiDeployError(f"cannot write {target}: folder {parent} is not writable")
    if Path(bundle_dir).absolute() in (target, *target.parents):
        raise BundleError(f"{target} is inside the bundle it packs; choose --out elsewhere")
    if target.is_symlink() or target.is_dir():
        raise OutputExistsError(f"--out {target} is a directory or a link; name a .tar.gz file")
    if target.exists() and not is_bundle_tarball(target):
        raise OutputExistsError(
            f"{target} exists and is not a csideploy bundle tarball; refusing to replace it"
        )
    return target


def is_bundle_tarball(path: Path) -> bool:
    """Whether `path` is a gzip tarball with `<top>/manifest.json` (what `pack` writes)."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for _, member in zip(range(TARBALL_SCAN_MEMBERS), tar, strict=False):
                parts = PurePosixPath(member.name).parts
                if len(parts) == 2 and parts[1] == MANIFEST_NAME and member.isfile():
                    return True
    except (tarfile.TarError, OSError, EOFError):
        return False
    return False
