"""Reproducible handset tarballs and safe extraction.

`pack` writes the UE side only, with sorted entries, fixed mtimes, owners and modes, and gzip
without a timestamp, so the same bundle always gives the same bytes. `safe_extract` refuses
links, absolute paths and `..` entries by name before extracting with tarfile's `data` filter.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from csideploy.bundle.manifest import MANIFEST_NAME, read_manifest
from csideploy.errors import BundleError

FIXED_MTIME = 0


def is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz"))


def pack_bundle(bundle_dir: Path, *, out: Path | None = None) -> Path:
    """Write `<bundle_dir>.tar.gz` (or `out`) holding the manifest and every UE-side file."""
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    members = sorted({MANIFEST_NAME, *(entry["path"] for entry in manifest["files"])})
    missing = [m for m in members if not (bundle_dir / m).is_file()]
    if missing:
        raise BundleError(f"{bundle_dir}: listed files are missing: {', '.join(missing)}")
    target = Path(out) if out else bundle_dir.with_name(bundle_dir.name + ".tar.gz")
    data = _tar_bytes(bundle_dir, bundle_dir.name, members)
    handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with (
            os.fdopen(handle, "wb") as raw,
            gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, mtime=FIXED_MTIME, compresslevel=9
            ) as stream,
        ):
            stream.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _tar_bytes(root: Path, prefix: str, members: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in _parents(members):
            tar.addfile(_info(f"{prefix}/{directory}", tarfile.DIRTYPE, 0o755, 0))
        for member in members:
            payload = (root / member).read_bytes()
            info = _info(f"{prefix}/{member}", tarfile.REGTYPE, 0o644, len(payload))
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _parents(members: list[str]) -> list[str]:
    parents = {str(p) for m in members for p in PurePosixPath(m).parents if str(p) != "."}
    return sorted(parents)


def _info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def safe_extract(tarball: Path, dest: Path) -> Path:
    """Extract a bundle tarball into `dest`; return the bundle's top directory."""
    try:
        with tarfile.open(tarball, mode="r:gz") as tar:
            members = tar.getmembers()
            _refuse_unsafe(tarball, members)
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{tarball}: cannot read the tarball ({error})") from None
    tops = {PurePosixPath(m.name).parts[0] for m in members}
    if len(tops) != 1:
        raise BundleError(f"{tarball}: expected one top-level directory, found {sorted(tops)}")
    root = dest / tops.pop()
    if not (root / MANIFEST_NAME).is_file():
        raise BundleError(f"{tarball}: no {MANIFEST_NAME} in the tarball")
    return root


def _refuse_unsafe(tarball: Path, members: list[tarfile.TarInfo]) -> None:
    for member in members:
        path = PurePosixPath(member.name)
        if member.issym() or member.islnk():
            raise BundleError(f"{tarball}: refusing link entry {member.name!r}")
        if path.is_absolute() or member.name.startswith(("/", "\\")):
            raise BundleError(f"{tarball}: refusing absolute path {member.name!r}")
        if ".." in path.parts:
            raise BundleError(f"{tarball}: refusing path with '..': {member.name!r}")
        if not (member.isfile() or member.isdir()):
            raise BundleError(f"{tarball}: refusing special entry {member.name!r}")
