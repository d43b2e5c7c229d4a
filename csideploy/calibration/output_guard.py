"""Where a data set is written: the checks that run before anything is generated.

Every writer of a data set (built-in, paired, Sionna, COST2100) goes through these rules:

- a file it would write that already exists is replaced only with `overwrite` (`--force`),
  and only in a directory that holds a csideploy data-set manifest (a JSON file whose
  `generator` names a csideploy generator); anything else is refused, naming the directory,
  so files the user owns are never replaced or deleted;
- the output location must be writable: the staging directory is created first, so an
  unwritable `-o` fails at once with one `OutputError` and leaves nothing behind;
- the disk must hold what will be written (`check_disk_space`), checked before generating;
- files are generated into the staging directory and moved into place at the end (one
  directory rename when the target did not exist, else one atomic `os.replace` per file).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from csideploy.errors import OutputError, OutputExistsError

STAGING_PREFIX = ".csideploy-staging."
GENERATOR_PREFIX = "csideploy."
_MANIFEST_LIMIT = 1 << 20
"""A manifest larger than this is not one of ours (and is not read whole)."""


def is_csideploy_dataset(directory: Path) -> bool:
    """Whether `directory` holds a manifest that a csideploy data-set writer wrote."""
    for candidate in sorted(directory.glob("*.json")):
        try:
            if not candidate.is_file() or candidate.stat().st_size > _MANIFEST_LIMIT:
                continue
            manifest = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        generator = manifest.get("generator") if isinstance(manifest, dict) else None
        if isinstance(generator, str) and generator.startswith(GENERATOR_PREFIX):
            return True
    return False


def refuse_existing(target: Path, names: Iterable[str], overwrite: bool) -> None:
    """OutputExistsError unless every file of `names` may be written into `target`."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target}: exists and is not a directory")
    clash = [name for name in names if os.path.lexists(target / name)]
    if not clash:
        return
    if not overwrite:
        raise OutputExistsError(
            f"{target}: would overwrite {', '.join(clash)}; pass overwrite=True (--force)"
        )
    if not is_csideploy_dataset(target):
        raise OutputExistsError(
            f"{target}: holds {', '.join(clash)} but no csideploy data-set manifest; "
            "--force replaces only a data set csideploy wrote, choose another directory"
        )


def check_disk_space(target: Path, needed: int) -> None:
    """OutputError when the file system of `target` has less than `needed` bytes free."""
    anchor = _nearest_existing(Path(target))
    free = shutil.disk_usage(anchor).free
    if needed > free:
        raise OutputError(
            f"{target}: not enough disk space: needs {needed:,} bytes ({_human(needed)}), "
            f"{free:,} bytes ({_human(free)}) free on {anchor}"
        )


@contextmanager
def staged_output(target: Path) -> Iterator[Path]:
    """A fresh staging directory for files bound for `target`; removed on exit.

    Created beside `target` (inside it when it exists), after creating missing parents: an
    unwritable location raises OutputError here, before any work. On failure the staging
    directory and any parents created for it are removed.
    """
    target = Path(target)
    created = _make_parents(target.parent, target)
    where = target if target.is_dir() else target.parent
    try:
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=where)).absolute()
    except OSError as exc:
        _remove_empty(created)
        raise OutputError(f"{target}: cannot write there ({exc.strerror or exc})") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_into_place(staging: Path, target: Path, names: Iterable[str]) -> None:
    """Put the staged files at `target`: one directory rename when `target` does not exist
    yet (all or nothing), else one atomic os.replace per file."""
    if not target.exists():
        try:
            os.rename(staging, target)
            _chmod_dir(target)
            return
        except OSError:  # lost a race to another writer: fall back to per-file moves
            pass
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.replace(staging / name, target / name)


def _make_parents(parent: Path, target: Path) -> list[Path]:
    """Create the missing directories of `parent`; returns them, deepest last."""
    missing: list[Path] = []
    probe = parent
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputError(f"{target}: {probe} is a file, not a directory")
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except OSError as exc:
            _remove_empty(created)
            raise OutputError(f"{target}: cannot write there ({exc.strerror or exc})") from None
        created.append(directory)
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove directories this module created, deepest first, where still empty."""
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return


def _nearest_existing(path: Path) -> Path:
    """`path` or its nearest existing ancestor (where its bytes would land)."""
    probe = path.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _human(size: float) -> str:
    """Bytes in binary units, e.g. 13.6 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} PiB"


def _chmod_dir(path: Path) -> None:
    """Give a mkdtemp directory (0700) the permissions a plain mkdir would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
