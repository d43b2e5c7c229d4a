"""Reproducible handset tarballs and safe extraction.

`pack` verifies the bundle first, then writes the UE side only (manifest, its hash and every
listed file, each re-hashed as it is read), with sorted entries, fixed mtimes, owners and
modes, and gzip without a timestamp, so the same bundle always gives the same bytes.

`safe_extract` reads every header before writing a byte: it refuses links, absolute paths,
`..` entries, special files, duplicates, more members or bytes than a bundle can hold, and
any member the tarball's own manifest does not list at exactly its listed size; only then does
it extract, with tarfile's `data` filter. Names from the tarball appear in messages escaped.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from csideploy.bundle.manifest import (
    MANIFEST_HASH_NAME,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    parse_manifest,
    read_manifest,
)
from csideploy.bundle.replace import check_pack_target
from csideploy.errors import BundleError

FIXED_MTIME = 0
MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 1 << 30
"""A bundle is a few MB; a tarball declaring more than this is refused before extraction."""


def is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz"))


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


def safe_extract(tarball: Path, dest: Path, *, require_manifest: bool = True) -> Path:
    """Extract a bundle tarball into `dest`; return the bundle's top directory.

    Without `require_manifest` (bench on an archive of loose artifacts), an archive with no
    bundle manifest is held to the name, type and size caps only, and may have several top
    folders (`dest` is returned then).
    """
    try:
        with tarfile.open(tarball, mode="r:*") as tar:
            members = _scan(tarball, tar)
            top = _top(tarball, members) if require_manifest else _single_top(members)
            manifest = _manifest_member(tarball, tar, members, top, require_manifest)
            if manifest is not None and top is not None:
                _check_against_manifest(tarball, members, manifest, top)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise BundleError(f"{tarball}: not a readable bundle archive ({_reason(error)})") from None
    return dest / top if top else dest


def _reason(error: BaseException) -> str:
    return ascii((str(error).splitlines() or [type(error).__name__])[0][:160])[1:-1]


def _scan(tarball: Path, tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Every header, refused as soon as one is unsafe or the declared sizes pass the cap."""
    members: list[tarfile.TarInfo] = []
    seen: set[str] = set()
    total = 0
    for member in tar:
        _refuse_unsafe(tarball, member)
        if member.name in seen:
            raise BundleError(f"{tarball}: refusing duplicate entry {member.name!r}")
        seen.add(member.name)
        total += member.size
        members.append(member)
        if len(members) > MAX_MEMBERS or total > MAX_TOTAL_BYTES:
            raise BundleError(
                f"{tarball}: more than {MAX_MEMBERS} entries or {MAX_TOTAL_BYTES >> 20} MiB; "
                "refusing to extract it"
            )
    return members


def _top(tarball: Path, members: list[tarfile.TarInfo]) -> str:
    tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
    if len(tops) != 1:
        shown = sorted(tops)[:5]
        raise BundleError(f"{tarball}: expected one top-level directory, found {shown}")
    return tops.pop()


def _single_top(members: list[tarfile.TarInfo]) -> str | None:
    tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
    return tops.pop() if len(tops) == 1 else None


def _manifest_member(
    tarball: Path,
    tar: tarfile.TarFile,
    members: list[tarfile.TarInfo],
    top: str | None,
    required: bool = True,
) -> dict[str, Any] | None:
    """The tarball's manifest, read into memory (never extracted) and validated; None when
    it is not required and the archive holds no bundle manifest."""
    name = f"{top}/{MANIFEST_NAME}"
    member = next((m for m in members if m.name == name and m.isfile()), None)
    if member is None and not required:
        return None
    if member is None:
        raise BundleError(f"{tarball}: no {MANIFEST_NAME} in the tarball")
    if member.size > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{tarball}: {MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES >> 20} MiB"
        )
    stream = tar.extractfile(member)
    assert stream is not None  # a regular file always has a stream
    text = stream.read()
    if not required and b'"schema_version"' not in text:
        return None  # loose artifacts with a manifest of their own, not a bundle
    return parse_manifest(text, source=f"{tarball}: {MANIFEST_NAME}")


def _check_against_manifest(
    tarball: Path, members: list[tarfile.TarInfo], manifest: dict[str, Any], top: str
) -> None:
    """Every file member is listed at exactly its listed size (the manifest's hash file has
    one line); directories only hold them."""
    sizes = {f"{top}/{entry['path']}": entry["bytes"] for entry in manifest["files"]}
    sizes[f"{top}/{MANIFEST_HASH_NAME}"] = None
    sizes[f"{top}/{MANIFEST_NAME}"] = None
    for member in members:
        if member.isdir():
            continue
        if member.name not in sizes:
            raise BundleError(f"{tarball}: refusing unlisted entry {member.name!r}")
        wanted = sizes[member.name]
        if wanted is not None and member.size != wanted:
            raise BundleError(
                f"{tarball}: entry {member.name!r} declares {member.size} bytes, the manifest "
                f"lists {wanted}; refusing to extract"
            )
        if member.name.endswith(MANIFEST_HASH_NAME) and member.size > 200:
            raise BundleError(f"{tarball}: {MANIFEST_HASH_NAME} is not a one-line file")


def _refuse_unsafe(tarball: Path, member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if member.issym() or member.islnk():
        raise BundleError(f"{tarball}: refusing link entry {member.name!r}")
    if path.is_absolute() or member.name.startswith(("/", "\\")):
        raise BundleError(f"{tarball}: refusing absolute path {member.name!r}")
    if ".." in path.parts:
        raise BundleError(f"{tarball}: refusing path with '..': {member.name!r}")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"{tarball}: refusing special entry {member.name!r}")
