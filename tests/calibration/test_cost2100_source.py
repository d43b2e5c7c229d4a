"""`data synth --source cost2100`: the authors' COST2100 model, run by a real Octave process.

The model's code is the repository's `third_party/cost2100/` (GPL-3, not part of the package).
Indoor draws take about 1.7 s per sample, so the test writes three samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from csideploy.calibration.cost2100_shards import write_sharded_cost2100
from csideploy.calibration.cost2100_source import batch_sizes, model_dir, plan_batches
from csideploy.calibration.io import load_csi, load_csi_freq
from csideploy.cli import main
from csideploy.metrics import rho

MODEL = Path(__file__).resolve().parents[2] / "third_party" / "cost2100"
FRACTIONS = {"val_fraction": 0.34, "test_fraction": 0.34}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _synth(*args: str) -> object:
    return CliRunner().invoke(main, ["data", "synth", "--source", "cost2100", *args])


def test_indoor_samples_through_octave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # a fixed .mat header date
    out = tmp_path / "cost2100"
    fractions = ("--val-fraction", "0.34", "--test-fraction", "0.34")  # = FRACTIONS
    args = ("-n", "3", *fractions, "--workers", "2", "-o", str(out), "--no-progress", "--json")
    result = _synth("--cost2100-dir", str(MODEL), *args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["source"] == "cost2100" and summary["dl_carrier_ghz"] == 5.3
    assert sorted(p.name for p in out.iterdir()) == [
        "DATA_HtestFin_all.mat",
        "DATA_Htestin.mat",
        "DATA_Htrainin.mat",
        "DATA_Hvalin.mat",
        "cost2100_dataset.json",
    ]
    x = np.concatenate([load_csi(out / f"DATA_H{s}in.mat") for s in ("train", "val", "test")])
    assert x.shape == (3, 2, 32, 32)
    # released convention: every sample scaled by its own largest component
    np.testing.assert_allclose(np.abs(x - 0.5).reshape(3, -1).max(axis=1), 0.5, atol=1e-6)
    # indoor: energy in the first delay columns (last axis)
    energy = ((x - 0.5) ** 2).sum(axis=(0, 1, 2))
    assert energy[:8].sum() > 0.8 * energy.sum()
    # HF_all matches the test sample: a perfect reconstruction scores rho near 1
    hf = load_csi_freq(out / "DATA_HtestFin_all.mat")
    assert hf.shape == (1, 32, 125) and rho(hf, x[2:]) > 0.9
    manifest = json.loads((out / "cost2100_dataset.json").read_text())
    assert manifest["generator"] == "csideploy.cost2100/1"
    assert manifest["settings"]["network"] == "IndoorHall_5GHz"
    assert manifest["settings"]["octave"].startswith("GNU Octave")
    assert manifest["counts"] == {"train": 1, "val": 1, "test": 1}
    assert manifest["redraws"] >= 0 and manifest["reruns"] == 0
    assert manifest["batches"]["count"] == 3 and "workers" not in manifest

    # Octave draws are reproducible: the batches one at a time, as shards, give the same bytes
    again = tmp_path / "again"
    write_sharded_cost2100(again, ray=None, cost2100_dir=MODEL, n=3, **FRACTIONS)
    assert _digests(again) == _digests(out)


def test_model_directory_is_found_or_refused(tmp_path: Path) -> None:
    assert model_dir(MODEL) == (MODEL / "matlab").resolve()
    result = _synth("--cost2100-dir", str(tmp_path), "-n", "3", "-o", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {tmp_path}: no cost2100.m here or in {tmp_path / 'matlab'}; --cost2100-dir "
        "must name the COST2100 model's MATLAB code"
    )
    assert not (tmp_path / "o").exists()


def test_usage_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    missing = _synth("-n", "3", "-o", out)
    assert missing.exit_code == 2 and "--source cost2100 needs --cost2100-dir" in missing.output
    builtin = CliRunner().invoke(
        main, ["data", "synth", "--cost2100-dir", out, "-n", "3", "-o", out]
    )
    assert builtin.exit_code == 2
    assert "--cost2100-dir applies to --source cost2100 only" in builtin.output
    assert not Path(out).exists()


def test_batches_cover_every_sample_whatever_the_workers() -> None:
    assert batch_sizes(3) == [1, 1, 1]
    assert sum(batch_sizes(20000)) == 20000 and max(batch_sizes(20000)) == 25
    assert batch_sizes(40) == [2] * 20 and batch_sizes(100) == [4] * 25
    plan = plan_batches(40, 7)
    assert [size for size, _ in plan] == batch_sizes(40)
    assert plan == plan_batches(40, 7) and plan != plan_batches(40, 8)  # fixed by n and seed
    assert len({seed for _, seed in plan}) == 20 and all(0 <= s < 2**31 for _, s in plan)


def test_missing_octave_is_one_error_line(tmp_path: Path) -> None:
    """A real process whose PATH holds no Octave: one error line saying how to install it."""
    env = {**os.environ, "PATH": str(tmp_path)}
    out = tmp_path / "o"
    command = [sys.executable, "-c", "from csideploy.cli import main; main()", "data", "synth"]
    args = ["--source", "cost2100", "--cost2100-dir", str(MODEL), "-n", "3", "-o", str(out)]
    proc = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: --source cost2100 needs GNU Octave (e.g. apt-get install "
        "--no-install-recommends octave)"
    )
    assert not out.exists()
