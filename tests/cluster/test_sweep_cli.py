"""`csideploy sweep` refusals (no export runs): untrained grids, unknown names, folders it
did not write, hostile cell results."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from csideploy.cli import main
from csideploy.errors import DataError
from csideploy.sweep.cell import CellSink


def _sweep(*args: str) -> object:
    return CliRunner().invoke(main, ["sweep", "--no-progress", *args])


def test_a_grid_without_trained_weights_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "o"
    result = _sweep("--model", "clnet,crnet", "--cr", "8", "--out", str(out))
    assert result.exit_code == 2
    assert (
        "error: no cell of the grid has trained weights: no shipped weights for clnet at "
        "CR 1/8 (shipped: 1/4, 1/32); no shipped weights for crnet at CR 1/8 (shipped: 1/64)"
    ) in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--model", "clnet", "--cr", "4", "--format", "onnx,gguf"],
            "error: --format: unknown 'gguf'",
        ),
        (["--model", "clnet", "--cr", "4", "--int8", "int4"], "error: --int8: unknown 'int4'"),
        (["--model", "clnet", "--cr", "four"], "error: --cr must be a comma list of integers"),
        (["--model", "nosuchnet", "--cr", "4"], "nosuchnet"),
        (["--model", "clnet", "--cr", "4", "--workers", "2", "--ray-address", "h:1"], "pick one"),
    ],
)
def test_bad_options_are_one_error_line(tmp_path: Path, args: list[str], expected: str) -> None:
    out = tmp_path / "o"
    result = _sweep(*args, "--out", str(out))
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_folders_it_did_not_write_are_left_alone(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    result = _sweep("--model", "crnet", "--cr", "64", "--out", str(mine))
    assert result.exit_code == 2
    assert "holds files but no sweep" in result.output
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]

    cell = tmp_path / "sweep" / "cells" / "crnet-cr64-onnx-float"
    cell.mkdir(parents=True)
    (cell / "encoder.onnx").write_bytes(b"someone's file")
    result = _sweep("--model", "crnet", "--cr", "64", "--out", str(tmp_path / "sweep"))
    assert result.exit_code == 2
    assert (
        "crnet-cr64-onnx-float: exists with no sweep record; a sweep never replaces it"
        in result.output
    )
    assert [p.name for p in cell.iterdir()] == ["encoder.onnx"]


def test_a_cell_result_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    sink = CellSink(tmp_path / "cells", {"c": {}})
    with pytest.raises(DataError, match=r"cell c returned a file outside its folder: '\.\./x'"):
        sink.save("c", {"ok.txt": b"1", "../x": b"2"})
    assert list((tmp_path / "cells").iterdir()) == []
    assert not (tmp_path / "x").exists()
