"""Reproducible handset tarballs: `pack_bundle` verifies the bundle first, then writes the UE
side only (manifest, its hash and every listed file, each re-hashed as it is read), with sorted
entries, fixed mtimes, owners and modes, and gzip without a timestamp, so the same bundle always
gives the same bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

from csideploy.bundle.manifest import (
    MANIFEST_HASH_NAME,
    MANIFEST_NAME,
    read_manifest,
)
from csideploy.bundle.replace import check_pack_target
from csideploy.errors import BundleError

FIXED_MTIME = 0


def pack_bundle(bundle_dir: Path, *, out: Path | None = None) -> Path:
    """Write `<bundle_dir>.tar.gz` (or `out`) holding the manifest and every UE-side file,
    after the bundle verifies; nothing is written when it does not."""
    from csideploy.bundle.verify import verify_bundle

    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a bundle directory")
    default = bundle_dir.absolute().with_name(bundle_dir.absolute().name + ".tar.gz")
    target = check_pack_target(Path(out) if out else default, bundle_dir)
    report = verify_bundle(bundle_dir)
    report.require_ok(f"nothing was packed; run csideploy verify {bundle_dir}")
    manifest = read_manifest(bundle_dir)
    hashes = {entry["path"]: entry["sha256"] for entry in manifest["files"]}
    hashes[MANIFEST_NAME] = report.manifest_sha256 or ""
    members = sorted({MANIFEST_NAME, MANIFEST_HASH_NAME, *hashes})
    data = _tar_bytes(bundle_dir, bundle_dir.absolute().name, members, hashes)
    _write_gzip(target, data)
    return target


def _write_gzip(target: Path, data: bytes) -> None:
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


def _tar_bytes(root: Path, prefix: str, members: list[str], hashes: dict[str, str]) -> bytes:
    """The tar stream; each file is hashed as read, so a file changed since `verify` ran is
    caught rather than packed."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in _parents(members):
            tar.addfile(_info(f"{prefix}/{directory}", tarfile.DIRTYPE, 0o755, 0))
        for member in members:
            payload = (root / member).read_bytes()
            wanted = hashes.get(member)
            if wanted is not None and hashlib.sha256(payload).hexdigest() != wanted:
                raise BundleError(f"{root / member} changed while packing; nothing was written")
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
