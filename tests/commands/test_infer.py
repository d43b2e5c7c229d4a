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
    """The CLNet authors' CR 1/64 files, the outdoor model (published outdoor NMSE -2.19 dB)."""
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


# ---------------------------------------------------------------- hostile and silly input


def _one_error_line(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: {text}"), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_unwritable_output_is_refused_before_the_model_runs(
    model_and_checkpoint, csi, tmp_path: Path
) -> None:
    _, ckpt = model_and_checkpoint
    _, x_path = csi
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a directory")
    out = blocker / "y.npy"
    result = invoke("--model", "crnet", "--checkpoint", ckpt, "--input", x_path, "--output", out)
    _one_error_line(result, f"cannot write {out}: {blocker} is not a directory")
    assert blocker.read_text() == "a file, not a directory"

    # sysfs refuses new files even to root: the probe finds that before any work
    out = Path("/sys") / "csideploy-y.npy"
    result = invoke("--model", "crnet", "--checkpoint", ckpt, "--input", x_path, "--output", out)
    _one_error_line(result, f"cannot write {out}: /sys is not writable")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_npy_header_claiming_more_than_the_file_holds_is_refused(
    model_and_checkpoint, tmp_path: Path
) -> None:
    _, ckpt = model_and_checkpoint
    forged = tmp_path / "forged.npy"
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 2, 32, 32), np.float32))
    header["shape"] = (10**12, 2, 32, 32)
    with open(forged, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        fh.write(b"\0" * 72)
    assert forged.stat().st_size == 200
    out = tmp_path / "y.npy"
    result = invoke("--model", "crnet", "--checkpoint", ckpt, "--input", forged, "--output", out)
    _one_error_line(
        result,
        f"{forged}: its header claims a float32 array of shape (1000000000000, 2, 32, 32) "
        "(8192000000000000 bytes) but the file holds 72 bytes of data: truncated or forged",
    )
    assert not out.exists()


def test_infer_refuses_csi_that_evaluate_refuses(model_and_checkpoint, tmp_path: Path) -> None:
    from csideploy.calibration.io import load_csi
    from csideploy.errors import DataError

    _, ckpt = model_and_checkpoint
    wild = tmp_path / "wild.npy"
    np.save(wild, np.linspace(-500, 500, 4 * 2048, dtype=np.float32).reshape(4, 2, 32, 32))
    with pytest.raises(DataError) as caught:
        load_csi(wild)  # the check evaluate and train apply
    out = tmp_path / "y.npy"
    for part in ("full", "encoder"):
        result = invoke("--model", "crnet", "--checkpoint", ckpt, "--part", part,
                        "--input", wild, "--output", out)
        _one_error_line(result, str(caught.value))
        assert "values range over [-500, 500], outside [0, 1]" in result.stderr
    assert not out.exists()


def test_weights_that_overflow_give_an_error_not_a_nan_file(csi, tmp_path: Path) -> None:
    _, x_path = csi
    model = build("crnet", 16)
    with torch.no_grad():  # finite weights whose products overflow float32
        model.encoder.encoder_fc.weight.fill_(3e38)
    ckpt = save_checkpoint(tmp_path / "huge.pt", model, metadata={})
    out = tmp_path / "y.npy"
    result = invoke("--model", "crnet", "--checkpoint", ckpt, "--input", x_path, "--output", out)
    _one_error_line(result, f"crnet CR 1/16 from {ckpt} gave 20480 NaN or inf values of 20480")
    assert "weights overflow float32; nothing written" in result.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.pt"]
