"""`csideploy data check`: released COST2100 files are named by sha256 and size, others not."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from csideploy.calibration import release_check
from csideploy.calibration.mat73_stream import Mat73StreamWriter
from csideploy.calibration.synthetic import generate
from csideploy.cli import main


def _check(directory: Path, *extra: str) -> object:
    return CliRunner().invoke(main, ["data", "check", str(directory), "--no-progress", *extra])


def test_unknown_files_and_a_v73_file_are_described(tmp_path: Path) -> None:
    (tmp_path / "DATA_Htestin.mat").write_bytes(b"not the released file")
    (tmp_path / "notes.txt").write_text("hello")
    x = generate(5, seed=1)
    with Mat73StreamWriter(tmp_path / "mine_v73.mat", {"HT": (5, 2048, np.float32)}) as writer:
        writer.write("HT", 0, x)
        writer.close()
    result = _check(tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("DATA_Htestin.mat: unknown: not a released COST2100 file, 21 bytes")
    assert "named like a released file, whose size is 285,973,959 bytes" in lines[0]
    assert (
        lines[1].startswith("mine_v73.mat: unknown")
        and "MATLAB v7.3 (HDF5), HT (5, 2048)" in lines[1]
    )
    assert lines[2].startswith("notes.txt: unknown")
    assert lines[3] == "0 of 8 released files found; 0 modified, 3 unknown"


def test_a_file_of_released_size_with_another_hash_is_flagged(tmp_path: Path) -> None:
    """Same size as DATA_Htestin.mat (a sparse file: no disk used), other content: hashed."""
    size = release_check.RELEASED["DATA_Htestin.mat"][1]
    fake = tmp_path / "DATA_Htestin.mat"
    with open(fake, "wb") as fh:
        fh.truncate(size)
    result = _check(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (entry,) = report["files"]
    assert entry["status"] == "modified" and entry["released_as"] == "DATA_Htestin.mat"
    assert entry["sha256"] == _zeros_sha256(size)  # streamed hash equals the real one
    assert report["modified"] == ["DATA_Htestin.mat"] and report["released"] == []
    assert "DATA_Htestin.mat" in report["missing"] and len(report["missing"]) == 8
    assert entry["notes"][0].startswith("not readable as a .mat file")


def _zeros_sha256(size: int) -> str:
    digest = hashlib.sha256()
    block = bytes(1 << 20)
    for _ in range(size // len(block)):
        digest.update(block)
    digest.update(bytes(size % len(block)))
    return digest.hexdigest()


def test_a_file_matching_a_published_hash_is_named(tmp_path: Path) -> None:
    """A file whose (size, sha256) is in the table is named, whatever its own name."""
    data = b"csideploy"
    table = {"DATA_Htestout.mat": (hashlib.sha256(data).hexdigest(), len(data))}
    (tmp_path / "downloaded.mat").write_bytes(data)
    (report,) = release_check.check_directory(tmp_path, released=table)
    assert (report.status, report.released_as) == ("released", "DATA_Htestout.mat")
    assert report.line().startswith(
        "downloaded.mat: released DATA_Htestout.mat (sha256 and size match), 9 bytes"
    )


def test_the_table_holds_the_published_hashes_and_sizes() -> None:
    assert len(release_check.RELEASED) == 8
    assert release_check.RELEASED["DATA_Htestin.mat"] == (
        "9740d1f57a03cb11b6d325aebb8f90fe175a5e7f80ef081817497931ce364c75",
        285_973_959,
    )
    assert all(len(h) == 64 and s > 10**8 for h, s in release_check.RELEASED.values())


def test_missing_directory_is_one_error_line(tmp_path: Path) -> None:
    result = _check(tmp_path / "nowhere")
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {tmp_path / 'nowhere'}: directory not found"
