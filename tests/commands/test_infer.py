"""`csideploy infer` end to end through the click command: every part, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from csideploy.cli import main
from csideploy.models import build, save_checkpoint
from csideploy.models.inference import run_model

OFFICIAL = Path(__file__).resolve().parents[1] / "fixtures" / "official"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infer")


@pytest.fixture(scope="module")
def model_and_checkpoint(workdir: Path):
    torch.manual_seed(0)
    model = build("crnet", 16)
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.is_floating_point():
                value.add_(0.01 * torch.randn_like(value))
    return model, save_checkpoint(workdir / "crnet16.pt", model, metadata={})


@pytest.fixture(scope="module")
def csi(workdir: Path) -> tuple[np.ndarray, Path]:
    x = np.random.default_rng(0).uniform(0.4, 0.6, (10, 2, 32, 32)).astype(np.float32)
    path = workdir / "csi.npy"
    np.save(path, x)
    return x, path


def invoke(*args: str):
    return CliRunner().invoke(main, ["infer", *map(str, args)])


def test_full_encoder_and_decoder_parts_agree_with_the_model(
    model_and_checkpoint, csi, tmp_path: Path
) -> None:
    model, ckpt = model_and_checkpoint
    x, x_path = csi
    common = ("--model", "crnet", "--checkpoint", ckpt, "--batch-size", 3)

    result = invoke(*common, "--input", x_path, "--output", tmp_path / "y.npy")
    assert result.exit_code == 0, result.output
    assert "crnet CR 1/16" in result.output
    y = np.load(tmp_path / "y.npy")
    assert y.shape == x.shape and y.dtype == np.float32

    result = invoke(*common, "--part", "encoder", "--input", x_path, "--output", tmp_path / "z.npy")
    assert result.exit_code == 0, result.output
    z = np.load(tmp_path / "z.npy")
    assert z.shape == (10, 128) and z.dtype == np.float32

    result = invoke(*common, "--part", "decoder", "--input", tmp_path / "z.npy",
                    "--output", tmp_path / "y2.npy", "--json")
    assert result.exit_code == 0, result.output
    assert '"output_shape": [\n    10,\n    2,\n    32,\n    32\n  ]' in result.output
    y2 = np.load(tmp_path / "y2.npy")

    with torch.no_grad():
        expected_z = model.encoder(torch.from_numpy(x)).numpy()
        expected_y = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(z, expected_z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y2, y, rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npy", "y2.npy", "z.npy"]


def test_real_clnet_split_files_through_the_cli(csi, tmp_path: Path) -> None:
    folder = OFFICIAL / "clnet_cr64"
    if not folder.is_dir():
        pytest.fail(f"test fixtures missing: expected {folder}")
    _, x_path = csi
    result = invoke("--model", "clnet", "--checkpoint", folder / "32encoder.pth.tar",
                    "--decoder-checkpoint", folder / "32decoder.pth.tar",
                    "--part", "encoder", "--input", x_path, "--output", tmp_path / "cw.npy")
    assert result.exit_code == 0, result.output
    assert "clnet CR 1/64 (clnet-split" in result.output
    codewords = np.load(tmp_path / "cw.npy")
    assert codewords.shape == (10, 32) and np.isfinite(codewords).all()


def test_wrong_input_shape_is_a_one_line_error(model_and_checkpoint, workdir: Path) -> None:
    _, ckpt = model_and_checkpoint
    flat = workdir / "flat.npy"
    np.save(flat, np.zeros((5, 2048), np.float32))
    out = workdir / "never.npy"
    result = invoke("--model", "crnet", "--checkpoint", ckpt, "--input", flat, "--output", out)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {flat}: expected shape (N, 2, 32, 32) for the full input of crnet CR 1/16, "
        "found (5, 2048)\n"
    )
    assert not out.exists()

    result = invoke("--model", "crnet", "--checkpoint", ckpt, "--part", "decoder",
                    "--input", flat, "--output", out)
    assert result.exit_code == 2
    assert "expected shape (N, 128) for the decoder input" in result.stderr
    assert result.stderr.count("\n") == 1


def test_bad_files_and_options_are_reported(model_and_checkpoint, csi, workdir: Path) -> None:
    _, ckpt = model_and_checkpoint
    _, x_path = csi
    existing = workdir / "exists.npy"
    existing.write_bytes(b"keep me")
    result = invoke("--model", "crnet", "--checkpoint", ckpt, "--input", x_path,
                    "--output", existing)
    assert result.exit_code == 2 and "pass --force" in result.stderr
    assert existing.read_bytes() == b"keep me"

    result = invoke("--model", "crnet", "--cr", 8, "--input", x_path, "--output", workdir / "o")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: no checkpoint given and none shipped for crnet CR 1/8; pass --checkpoint FILE\n"
    )

    result = invoke("--model", "crnet", "--checkpoint", workdir / "missing.pt",
                    "--input", x_path, "--output", workdir / "o.npy")
    assert result.exit_code == 2 and "checkpoint file not found" in result.stderr

    nan = workdir / "nan.npy"
    np.save(nan, np.full((2, 2, 32, 32), np.nan, np.float32))
    result = invoke("--model", "crnet", "--checkpoint", ckpt, "--input", nan,
                    "--output", workdir / "o.npy")
    assert result.exit_code == 2 and "NaN or inf" in result.stderr


def test_run_model_batches_give_the_same_result(model_and_checkpoint, csi) -> None:
    model, _ = model_and_checkpoint
    x, _ = csi
    whole = run_model(model, x, part="encoder", batch_size=100)
    pieces = run_model(model, x, part="encoder", batch_size=4)
    np.testing.assert_allclose(whole, pieces, rtol=1e-5, atol=1e-6)
