"""The staged output directory: nothing half-written, `--force` replaces only when complete."""

from __future__ import annotations

import json
import math

import pytest

from csideploy.errors import CsiDeployError, OutputExistsError
from csideploy.export.writer import StagedOutput, check_output, write_json


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


def test_force_keeps_the_old_directory_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
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
