"""The staged output directory: nothing half-written, `--force` replaces only when complete."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from csideploy.errors import CsiDeployError, OutputExistsError
from csideploy.pipeline.write import StagedOutput, check_output, write_json


def test_commit_renames_the_staging_directory(tmp_path):
    target = tmp_path / "out"
    with StagedOutput(target) as staged:
        assert staged.path.parent == tmp_path and staged.path.name.startswith("out.tmp-")
        (staged.path / "a.txt").write_text("a")
        assert not target.exists()
        staged.commit()
    assert (target / "a.txt").read_text() == "a"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failure_leaves_nothing(tmp_path):
    target = tmp_path / "deep" / "er" / "out"
    with pytest.raises(RuntimeError), StagedOutput(target) as staged:
        (staged.path / "a.txt").write_text("a")
        raise RuntimeError("gate failed")
    assert list(tmp_path.iterdir()) == []  # the parents it created are gone too


def test_existing_target_needs_force(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(OutputExistsError, match="--force"):
        StagedOutput(tmp_path / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError, match="not a directory"):
        check_output(tmp_path / "file", force=True)


def _old_export(target):
    """A directory as an export leaves it: a csideploy manifest listing its one file."""
    target.mkdir()
    (target / "old.txt").write_text("old")
    entry = {"path": "old.txt", "sha256": "0" * 64, "bytes": 3}
    (target / "manifest.json").write_text(json.dumps({"schema_version": "1.0", "files": [entry]}))


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_force_keeps_the_old_directory_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "out"
    _old_export(target)
    with pytest.raises(RuntimeError), StagedOutput(target, force=True):
        raise RuntimeError("failed half way")
    assert (target / "old.txt").read_text() == "old"
    with StagedOutput(target, force=True) as staged:
        (staged.path / "new.txt").write_text("new")
        staged.commit()
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_unwritable_location_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(CsiDeployError, match="is not a directory"):
        StagedOutput(tmp_path / "file" / "out")


def test_json_is_strict_and_stable(tmp_path):
    write_json(tmp_path / "a.json", {"b": math.inf, "a": (1, 2.5), "n": math.nan})
    text = (tmp_path / "a.json").read_text()
    assert json.loads(text) == {"b": "inf", "a": [1, 2.5], "n": None}
    assert text.endswith("\n") and text.index('"b"') < text.index('"a"')


def _user_folder(target):
    target.mkdir()
    (target / "thesis.txt").write_text("five years of work")
    (target / "sub").mkdir()
    (target / "sub" / "notes.txt").write_text("notes")


def test_force_refuses_a_directory_that_is_not_a_bundle(tmp_path):
    target = tmp_path / "out"
    _user_folder(target)
    before = _tree(target)
    with pytest.raises(OutputExistsError, match=f"{target} exists and is not a csideploy bundle"):
        StagedOutput(target, force=True)
    (target / "manifest.json").write_text('{"not": "ours"}')
    with pytest.raises(OutputExistsError, match="is not a csideploy bundle"):
        check_output(target, force=True)
    (target / "manifest.json").unlink()
    assert _tree(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_force_refuses_a_bundle_holding_files_it_does_not_list(tmp_path):
    target = tmp_path / "out"
    _old_export(target)
    (target / "thesis.txt").write_text("kept beside the export")
    with pytest.raises(OutputExistsError, match=r"does not list \('thesis.txt'\)"):
        check_output(target, force=True)
    assert (target / "thesis.txt").read_text() == "kept beside the export"


def test_force_replaces_an_empty_directory(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with StagedOutput(target, force=True) as staged:
        (staged.path / "new.txt").write_text("new")
        staged.commit()
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_what_force_deletes_is_checked_again_at_commit(tmp_path):
    target = tmp_path / "out"
    _old_export(target)
    with (
        pytest.raises(OutputExistsError, match="does not list"),
        StagedOutput(target, force=True) as staged,
    ):
        (staged.path / "new.txt").write_text("new")
        (target / "thesis.txt").write_text("written while the export ran")
        staged.commit()
    assert (target / "thesis.txt").read_text() == "written while the export ran"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_staging_dirs_are_removed_or_reported(tmp_path, capsys):
    target = tmp_path / "out"
    dead = _dead_pid()
    killed = tmp_path / f"out.tmp-{dead}-abcd1234"
    parked = tmp_path / f"out.old-{dead}-abcd1234"
    unknown = tmp_path / "out.tmp-zzzzzzzz"
    for folder in (killed, parked, unknown):
        folder.mkdir()
        (folder / "encoder.onnx").write_bytes(b"half written")
    with StagedOutput(target) as staged:
        staged.commit()
    err = capsys.readouterr().err
    assert not killed.exists()
    assert f"note: removed {killed}, left by an export (pid {dead}) that was killed" in err
    assert parked.is_dir() and unknown.is_dir()  # an .old- dir may be the only copy
    assert f"note: left {parked} alone (a previous output parked by --force" in err
    assert f"note: left {unknown} alone (a staging directory" in err


def test_export_force_refuses_a_user_folder_cli(tmp_path):
    from click.testing import CliRunner

    from csideploy.cli import main

    target = tmp_path / "out"
    _user_folder(target)
    before = _tree(target)
    checkpoint = Path(__file__).resolve().parents[1] / "fixtures/official/crnet/in_64.pth"
    args = ["export", "--model", "crnet", "--checkpoint", str(checkpoint), "--format", "onnx"]
    result = CliRunner().invoke(main, [*args, "--out", str(target), "--force"])
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"error: {target} exists and is not a csideploy bundle (no csideploy manifest.json); "
        "refusing to replace it: move it away or choose another --out\n"
    )
    assert _tree(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
