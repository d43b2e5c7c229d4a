"""Reading handset tarballs safely (writing them: `bundle.pack`).

`safe_extract` reads every header before writing a byte: it refuses links, absolute paths,
`..` entries, special files, duplicates, more members or bytes than a bundle can hold, and
any member the tarball's own manifest does not list at exactly its listed size; only then does
it extract, with tarfile's `data` filter. Names from the tarball appear in messages escaped.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from csideploy.bundle.manifest import (
    MANIFEST_HASH_NAME,
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    parse_manifest,
)
from csideploy.errors import BundleError

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 1 << 30
"""A bundle is a few MB; a tarball declaring more than this is refused before extraction."""


def is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz"))


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
