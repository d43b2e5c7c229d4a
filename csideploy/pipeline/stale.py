"""Staging directories an export left behind when it was killed (SIGKILL, power loss).

An export builds `<out>.tmp-<pid>-XXXXXXXX` beside its target and renames it into place at the
end; `--force` parks the old output in `<out>.old-<pid>-XXXXXXXX` for a moment. A process that
is killed outright cannot remove them. The next export to the same target removes the staging
directories that are recognisably ours and dead (the name carries the pid of an export that no
longer runs, and this user owns them) and reports every other leftover without touching it:
an `.old-` directory may hold the only copy of the previous output.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

STAGING = "tmp"
PARKED = "old"


def prefix(target: Path, kind: str = STAGING) -> str:
    """The mkdtemp prefix of a staging (or parked) directory of `target` for this process."""
    return f"{target.name}.{kind}-{os.getpid()}-"


def sweep(target: Path) -> list[str]:
    """Remove dead staging directories of `target`; return one note per leftover seen."""
    notes = []
    pattern = re.compile(rf"^{re.escape(target.name)}\.(tmp|old)-(?:(\d+)-)?[A-Za-z0-9_]+$")
    try:
        siblings = sorted(target.parent.iterdir())
    except OSError:
        return notes
    for path in siblings:
        match = pattern.match(path.name)
        if not match or path.is_symlink() or not path.is_dir():
            continue
        kind, pid = match.group(1), match.group(2)
        if kind == STAGING and pid and _ours_and_dead(path, int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            notes.append(f"removed {path}, left by an export (pid {pid}) that was killed")
        elif not (pid and _alive(int(pid))):
            what = (
                "a previous output parked by --force" if kind == PARKED else "a staging directory"
            )
            notes.append(f"left {path} alone ({what} of an earlier run; remove it if unneeded)")
    return notes


def report(notes: list[str]) -> None:
    """One `note:` line per leftover on stderr (the export's own output stays on stdout)."""
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _ours_and_dead(path: Path, pid: int) -> bool:
    try:
        owned = path.stat().st_uid == os.getuid()
    except OSError:
        return False
    return owned and pid != os.getpid() and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True
