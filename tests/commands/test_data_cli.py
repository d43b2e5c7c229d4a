"""`csideploy data synth`: a COST2100-layout data set on disk, end to end through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from csideploy.calibration.io import load_csi, load_csi_freq
from csideploy.calibration.synthetic import generate, split_seeds
from csideploy.cli import main

_CLI = (sys.executable, "-c", "from csideploy.cli import main; main()")


def _synth(*args: str) -> object:
    return CliRunner().invoke(main, ["data", "synth", *args])


def test_synth_writes_the_cost2100_layout(tmp_path: Path) -> None:
    out = tmp_path / "outdoor"
    options = "--scenario outdoor -n 30 --seed 4 --val-fraction 0.2 --test-fraction 0.1"
    result = _synth(*options.split(), "-o", str(out), "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    files = json.loads(result.output)
    assert Path(files["train"]).name == "DATA_Htrainout.mat"
    train, val, test = (load_csi(out / f"DATA_H{s}out.mat") for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (21, 6, 3)
    assert load_csi_freq(out / "DATA_HtestFout_all.mat").shape == (3, 32, 125)
    # the seed reaches the generator: the training split is regenerable from the manifest
    np.testing.assert_array_equal(
        train, generate(21, scenario="outdoor", seed=split_seeds(4)["train"])
    )
    manifest = json.loads((out / "synthetic_dataset.json").read_text())
    assert manifest["scenario"] == "outdoor" and manifest["seed"] == 4


def test_synth_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    args = ("-n", "12", "-o", str(tmp_path), "--no-progress")
    assert _synth(*args).exit_code == 0
    again = _synth(*args)
    assert again.exit_code == 2
    lines = again.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "DATA_Htrainin.mat" in lines[0]
    assert _synth(*args, "--force").exit_code == 0


def test_synth_rejects_fractions_that_leave_no_training_data(tmp_path: Path) -> None:
    fractions = ["--val-fraction", "0.6", "--test-fraction", "0.5"]
    result = _synth("-n", "10", "-o", str(tmp_path / "d"), *fractions, "--no-progress")
    assert result.exit_code == 2
    assert "empty split" in result.output
    assert not (tmp_path / "d" / "DATA_Htrainin.mat").exists()
    assert _synth("-n", "10", "-o", str(tmp_path / "e"), "--val-fraction", "1.5").exit_code == 2


def test_synth_shows_progress_in_a_real_process(tmp_path: Path) -> None:
    out = tmp_path / "indoor"
    proc = subprocess.run(
        [*_CLI, "data", "synth", "--scenario", "indoor", "-n", "20", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "synthetic indoor" in proc.stderr  # the tqdm bar, on stderr
    assert "DATA_Htrainin.mat" in proc.stdout
    assert load_csi(out / "DATA_Htrainin.mat").shape[1:] == (2, 32, 32)
