"""The shared atomic writer: a rename over the old file, never an in-place rewrite."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from csideploy.fileio import write_atomic


def test_replaces_by_rename_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "perf.json"
    target.write_text("old\n")
    reader = tmp_path / "held-by-a-reader"
    os.link(target, reader)  # a reader that opened the old file keeps the old bytes
    assert write_atomic(target, "new\n") == target
    assert target.read_text() == "new\n"
    assert reader.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held-by-a-reader", "perf.json"]


def test_bytes_into_a_new_folder_with_the_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "MANIFEST.sha256"
    previous = os.umask(0o027)
    try:
        write_atomic(target, b"\x00\xffdigest")
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"\x00\xffdigest"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
