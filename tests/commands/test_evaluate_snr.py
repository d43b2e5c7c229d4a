"""`csideploy evaluate --snr`: NMSE with AWGN on the codeword, worse at low SNR."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner

from csideploy.calibration.mat_write import save_csi_mat
from csideploy.calibration.synthetic import generate
from csideploy.cli import main
from csideploy.models import build
from csideploy.models.checkpoint import save_checkpoint


def test_snr_sweep_reports_each_level_and_noise_hurts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "m.pt", build("cllwcsinet", 16), metadata={})
    x = generate(64, scenario="indoor", seed=3)
    data = save_csi_mat(tmp_path / "test.mat", x.reshape(len(x), -1))
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--model",
            "cllwcsinet",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--snr",
            "-10,40",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    points = json.loads(result.output)["points"]
    assert [p["snr_db"] for p in points] == [-10.0, 40.0]
    assert points[0]["nmse_db"] > points[1]["nmse_db"]


def test_bad_snr_list_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "evaluate",
            "--model",
            "clnet",
            "--checkpoint",
            str(tmp_path / "x.pt"),
            "--data",
            str(tmp_path),
            "--snr",
            "ten",
        ],
    )
    assert result.exit_code == 2
    assert "--snr" in result.output
