"""Evaluation: named NMSE conventions that agree with `metrics.nmse`, and checkpoint files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from csideploy import metrics
from csideploy.calibration.mat_write import save_csi_freq_mat, save_csi_mat
from csideploy.calibration.synthetic import generate
from csideploy.errors import CsiDeployError, DataError, ShapeError
from csideploy.evaluate import evaluate, evaluate_checkpoint, reconstruct
from csideploy.models import build
from csideploy.models.checkpoint import save_checkpoint


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Single-threaded kernels: a shared 2-core runner stalls multi-threaded ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build("crnet", 32)


@pytest.fixture(scope="module")
def csi() -> np.ndarray:
    return generate(40, scenario="outdoor", seed=1)


@pytest.mark.parametrize("convention", sorted(metrics.NMSE_CONVENTIONS))
def test_evaluate_names_the_convention_and_matches_metrics(
    model: torch.nn.Module, csi: np.ndarray, convention: str
) -> None:
    result = evaluate(model, csi, convention=convention, batch_size=7)
    with torch.no_grad():
        x_hat = model(torch.from_numpy(csi)).numpy()
    assert result.convention == convention
    assert result.convention_description == metrics.NMSE_CONVENTIONS[convention]
    assert result.n_samples == 40
    assert result.nmse_db == pytest.approx(
        float(metrics.nmse(csi, x_hat, convention=convention)), abs=1e-4
    )
    assert convention in result.summary() and "dB" in result.summary()
    assert result.rho is None


def test_evaluate_defaults_to_linear(model: torch.nn.Module, csi: np.ndarray) -> None:
    assert evaluate(model, csi).convention == "linear"


def test_unknown_convention_is_rejected(model: torch.nn.Module, csi: np.ndarray) -> None:
    with pytest.raises(ValueError, match="linear"):
        evaluate(model, csi, convention="median")


def test_reconstruct_restores_training_mode_and_checks_shape(
    model: torch.nn.Module, csi: np.ndarray
) -> None:
    model.train()
    try:
        out = reconstruct(model, csi[:5])
        assert model.training
    finally:
        model.eval()
    assert out.shape == (5, 2, 32, 32) and out.dtype == np.float32
    with pytest.raises(ShapeError):
        reconstruct(model, csi[:5, :1])


def test_evaluate_checkpoint_on_file_and_directory(
    model: torch.nn.Module, csi: np.ndarray, tmp_path: Path
) -> None:
    ckpt = tmp_path / "crnet_cr32.pt"
    save_checkpoint(ckpt, model, metadata={"note": "test"})
    save_csi_mat(tmp_path / "DATA_Htestout.mat", csi)
    expected = evaluate(model, csi).nmse_db

    from_file = evaluate_checkpoint("crnet", ckpt, tmp_path / "DATA_Htestout.mat")
    from_dir = evaluate_checkpoint("crnet", ckpt, tmp_path, cr=32, limit=10)
    assert from_file.nmse_db == pytest.approx(expected, abs=1e-4)
    assert from_file.cr == 32 and from_file.n_samples == 40
    assert from_dir.n_samples == 10 and from_dir.data.endswith("DATA_Htestout.mat")


def test_rho_from_hf_matches_metrics(model: torch.nn.Module, tmp_path: Path) -> None:
    x, hf = generate(24, scenario="indoor", seed=5, return_freq=True)
    result = evaluate(model, x, hf=hf)
    with torch.no_grad():
        x_hat = model(torch.from_numpy(x)).numpy()
    assert result.rho == pytest.approx(metrics.rho(hf, x_hat), abs=1e-6)
    assert "rho" in result.summary()

    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, metadata={})
    save_csi_mat(tmp_path / "DATA_Htestin.mat", x)
    save_csi_freq_mat(tmp_path / "DATA_HtestFin_all.mat", hf)
    found = evaluate_checkpoint("crnet", ckpt, tmp_path)  # HF_all found beside the test file
    assert found.rho == pytest.approx(result.rho, abs=1e-6)
    limited = evaluate_checkpoint("crnet", ckpt, tmp_path, limit=8)
    assert limited.n_samples == 8 and limited.rho is not None
    save_csi_freq_mat(tmp_path / "short.mat", hf[:5])
    with pytest.raises(CsiDeployError, match="5 HF_all samples"):
        evaluate_checkpoint("crnet", ckpt, tmp_path, hf=tmp_path / "short.mat")


def test_evaluate_checkpoint_missing_data(model: torch.nn.Module, tmp_path: Path) -> None:
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, model, metadata={})
    with pytest.raises(CsiDeployError, match=r"absent\.mat"):
        evaluate_checkpoint("crnet", ckpt, tmp_path / "absent.mat")


def test_dualnet_mp_is_evaluated_with_the_uplink_of_a_paired_file(tmp_path):
    from csideploy.calibration.paired import load_paired, write_paired_dataset
    from csideploy.models.zoo.dualnet_mp import fit_magnitude_gain

    torch.manual_seed(0)
    model = build("dualnet-mp", 16)
    files = write_paired_dataset(tmp_path / "paired", n=60, seed=0).files
    fit_magnitude_gain(model, load_paired(files["train"])[0])  # as training does
    checkpoint = save_checkpoint(tmp_path / "dual.pt", model)
    result = evaluate_checkpoint("dualnet-mp", checkpoint, files["test"])
    dl, ul = load_paired(files["test"])
    assert result.nmse_db == pytest.approx(evaluate(model, dl, side=ul).nmse_db, abs=1e-6)
    assert result.nmse_db != pytest.approx(evaluate(model, dl).nmse_db, abs=1e-3)


def test_dualnet_mp_evaluation_needs_paired_data(tmp_path):
    from csideploy.calibration.dataset_writer import write_synthetic_dataset

    checkpoint = save_checkpoint(tmp_path / "dual.pt", build("dualnet-mp", 16))
    files = write_synthetic_dataset(tmp_path / "plain", n=60, seed=0)
    with pytest.raises(DataError, match="HT_UL"):
        evaluate_checkpoint("dualnet-mp", checkpoint, files["test"])


def _evaluate_cli(*args: str):
    from click.testing import CliRunner

    from csideploy.cli import main

    return CliRunner().invoke(main, ["evaluate", "--model", "crnet", *args])


def test_limit_zero_is_one_error_line(model: torch.nn.Module, tmp_path: Path) -> None:
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    data = save_csi_mat(tmp_path / "DATA_Htestin.mat", generate(4, seed=3))
    result = _evaluate_cli("--checkpoint", str(ckpt), "--data", str(data), "--limit", "0")
    assert result.exit_code == 2
    assert result.stderr == "error: limit must be a positive number of samples, got 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DATA_Htestin.mat", "m.pt"]


def test_csi_without_a_channel_is_refused_not_scored_inf(
    model: torch.nn.Module, tmp_path: Path
) -> None:
    ckpt = save_checkpoint(tmp_path / "m.pt", model)
    flat = np.full((6, 2048), 0.5, np.float32)
    flat[:2] = generate(2, seed=4).reshape(2, 2048)  # two real samples, four all-0.5
    data = save_csi_mat(tmp_path / "zero.mat", flat)
    result = _evaluate_cli("--checkpoint", str(ckpt), "--data", str(data))
    assert result.exit_code == 2 and "inf" not in result.stderr
    assert result.stderr == (
        "error: 4 of 6 CSI samples are all 0.5 (no channel; first at index 2): NMSE is "
        "undefined for them\n"
    )
    with pytest.raises(DataError, match=r"4 of 6 CSI samples are all 0\.5"):
        evaluate(model, flat.reshape(6, 2, 32, 32))
