"""`csideploy train` for every zoo model through the CLI: --train-snr, --latent conv, LORA's
quantizer options and DualNet-MP's two-stage recipe on paired UL/DL data, with the checkpoints
reloaded, evaluated and exported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner, Result

from csideploy.calibration.dataset_writer import write_synthetic_dataset
from csideploy.calibration.paired import load_paired, write_paired_dataset
from csideploy.cli import main
from csideploy.errors import UnknownModelError
from csideploy.metrics import nmse
from csideploy.models.checkpoint import load_model
from csideploy.models.noise import built_in_training_snr
from csideploy.models.registry import resolve_model_name

FAST = (
    *("--epochs", "2", "--batch-size", "16", "--scheduler", "const"),
    *("--device", "cpu", "--threads", "1", "--no-progress", "--json"),
)
FAST_LR = "5e-3"


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 synthetic samples: 53 train, 16 val, 11 test (HT only)."""
    root = tmp_path_factory.mktemp("single")
    write_synthetic_dataset(root, n=80, seed=1)
    return root


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 paired samples (HT and HT_UL in every split)."""
    root = tmp_path_factory.mktemp("paired")
    write_paired_dataset(root, n=80, seed=1)
    return root


def _train(*args: str, lr: str = FAST_LR) -> Result:
    return CliRunner().invoke(main, ["train", *args, *FAST, "--lr", lr])


def _ok(result: Result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _checkpoint(tmp_path: Path, name: str) -> dict:
    return torch.load(tmp_path / name, map_location="cpu", weights_only=True)


# -- --train-snr ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noisy_cllwcsinet(single: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("noisy") / "cllw.pt"
    summary = _ok(
        _train(
            "--model",
            "cllwcsinet",
            "--cr",
            "16",
            "--train-snr",
            "10",
            "--data",
            str(single),
            "--out",
            str(out),
        )
    )
    assert summary["build_options"] == {"train_snr_db": 10.0}
    losses = summary["loss_history"]
    assert losses[-1] < losses[0]
    return out


def test_train_snr_is_a_build_option_and_noise_is_training_only(noisy_cllwcsinet: Path) -> None:
    payload = torch.load(noisy_cllwcsinet, map_location="cpu", weights_only=True)
    assert payload["build_options"] == {"train_snr_db": 10.0}
    assert payload["metadata"]["training"]["train_snr_db"] == 10.0

    model = load_model("cllwcsinet", checkpoint=noisy_cllwcsinet).model
    assert built_in_training_snr(model) == 10.0
    x = torch.rand(8, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval mode: no noise
        model.train()
        first, second = model(x), model(x)
        model.eval()
    assert not torch.allclose(first, second)  # training mode: fresh noise per call


def test_evaluate_of_a_noise_trained_checkpoint_is_repeatable(
    noisy_cllwcsinet: Path, single: Path
) -> None:
    command = [
        "evaluate",
        "--model",
        "cllwcsinet",
        "--checkpoint",
        str(noisy_cllwcsinet),
        "--data",
        str(single),
        "--json",
    ]
    first, second = _ok(CliRunner().invoke(main, command)), _ok(CliRunner().invoke(main, command))
    assert first["nmse_db"] == second["nmse_db"] and first["n_samples"] == 11


def test_export_of_a_noise_trained_checkpoint_is_deterministic(
    noisy_cllwcsinet: Path, tmp_path: Path
) -> None:
    out = tmp_path / "artifacts"
    result = CliRunner().invoke(
        main,
        [
            "export",
            "--model",
            "cllwcsinet",
            "--checkpoint",
            str(noisy_cllwcsinet),
            "--format",
            "onnx",
            "--eval-samples",
            "64",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    model = load_model("cllwcsinet", checkpoint=noisy_cllwcsinet).model
    x = torch.rand(4, 2, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codeword = model.encoder(x)
        csi_hat = model.decoder(codeword)
    for name, feed, expected in (
        ("encoder.onnx", x.numpy(), codeword.numpy()),
        ("decoder.onnx", codeword.numpy(), csi_hat.numpy()),
    ):
        graph = onnx.load(str(out / name)).graph
        assert not [n.op_type for n in graph.node if n.op_type.startswith("Random")]
        session = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"])
        inputs = {session.get_inputs()[0].name: feed}
        first, second = session.run(None, inputs)[0], session.run(None, inputs)[0]
        assert np.array_equal(first, second)
        np.testing.assert_allclose(first, expected, atol=1e-5)


def test_train_snr_on_a_model_without_its_own_channel(single: Path, tmp_path: Path) -> None:
    """The noise comes from a hook during training: the checkpoint holds a plain model."""
    summary = _ok(
        _train(
            "--model",
            "crnet",
            "--cr",
            "16",
            "--train-snr",
            "0",
            "--data",
            str(single),
            "--out",
            str(tmp_path / "crnet.pt"),
        )
    )
    assert summary["build_options"] == {}
    assert summary["loss_history"][-1] < summary["loss_history"][0]
    payload = _checkpoint(tmp_path, "crnet.pt")
    assert payload["metadata"]["training"]["train_snr_db"] == 0.0
    model = load_model("crnet", checkpoint=tmp_path / "crnet.pt").model
    assert not model.decoder._forward_pre_hooks
    x = torch.rand(8, 2, 32, 32)
    with torch.no_grad():
        model.train()
        assert torch.equal(model(x), model(x))


# -- --latent ------------------------------------------------------------------------------


def test_resolve_model_name() -> None:
    assert resolve_model_name("clnet", "conv") == "clnet-cl"
    assert resolve_model_name("csinet", "conv") == "csinet-cl"
    assert resolve_model_name("crnet", "conv") == "crnet-cl"
    assert resolve_model_name("clnet", "fc") == "clnet"
    assert resolve_model_name("clnet-cl", "conv") == "clnet-cl"
    assert resolve_model_name("cllwcsinet", "conv") == "cllwcsinet"
    with pytest.raises(
        UnknownModelError, match=r"no convolutional-latent variant.*clnet -> clnet-cl"
    ):
        resolve_model_name("lora", "conv")
    with pytest.raises(UnknownModelError, match="unknown model"):
        resolve_model_name("nonet", "conv")
    with pytest.raises(UnknownModelError, match="latent must be"):
        resolve_model_name("clnet", "dense")


def test_latent_conv_trains_the_cl_variant(single: Path, tmp_path: Path) -> None:
    out = tmp_path / "clnet-cl.pt"
    summary = _ok(
        _train(
            "--model",
            "clnet",
            "--latent",
            "conv",
            "--cr",
            "16",
            "--data",
            str(single),
            "--out",
            str(out),
        )
    )
    assert summary["model"] == "clnet-cl" and summary["cr"] == 16
    assert summary["loss_history"][-1] < summary["loss_history"][0]
    assert load_model("clnet-cl", checkpoint=out).name == "clnet-cl"
    report = _ok(
        CliRunner().invoke(
            main,
            [
                "evaluate",
                "--model",
                "clnet",
                "--latent",
                "conv",
                "--checkpoint",
                str(out),
                "--data",
                str(single),
                "--json",
            ],
        )
    )
    assert report["model"] == "clnet-cl"


def test_latent_conv_without_a_variant_is_an_error(single: Path, tmp_path: Path) -> None:
    line = _error(
        _train(
            "--model",
            "lora",
            "--latent",
            "conv",
            "--cr",
            "16",
            "--data",
            str(single),
            "--out",
            str(tmp_path / "x.pt"),
        )
    )
    assert "no convolutional-latent variant" in line and "clnet -> clnet-cl" in line
    line = _error(
        CliRunner().invoke(
            main,
            ["export", "--model", "dualnet-mp", "--latent", "conv", "--out", str(tmp_path / "e")],
        )
    )
    assert "dualnet-mp" in line and "crnet -> crnet-cl" in line
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "e").exists()


# -- LORA options --------------------------------------------------------------------------


def test_lora_with_a_4_bit_lsq_quantizer(single: Path, tmp_path: Path) -> None:
    out = tmp_path / "lora.pt"
    summary = _ok(
        _train(
            "--model",
            "lora",
            "--cr",
            "16",
            "--quantizer",
            "lsq",
            "--bits",
            "4",
            "--data",
            str(single),
            "--out",
            str(out),
            # The CLI's default peak lr: on built-in CSI in the released convention (spread
            # about 0.03 around 0.5) Adam at 5e-3 overshoots LORA's 2048x1024 regulariser MLP
            # and the second epoch's loss rises (measured 6.4e-4 -> 2.5e-3); at 2e-3 it falls
            # (5.6e-4 -> 4.7e-4).
            lr="2e-3",
        )
    )
    assert summary["build_options"]["quantizer"] == "lsq"
    assert summary["build_options"]["bits"] == 4
    assert summary["loss_history"][-1] < summary["loss_history"][0]
    model = load_model("lora", checkpoint=out).model
    quantizer = model.encoder.quantizer
    assert quantizer.scheme == "lsq" and quantizer.bits == 4 and bool(quantizer.initialized)
    codeword = model.encoder(torch.rand(4, 2, 32, 32))
    assert torch.equal(codeword, codeword.round())
    assert int(codeword.min()) >= -8 and int(codeword.max()) <= 7


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "csinet", "--quantizer", "lsq"], "takes no option 'quantizer'"),
        (["--model", "crnet", "--bits", "4"], "takes no option 'bits'"),
        (["--model", "lora", "--bits", "4"], "give --quantizer too"),
        (["--model", "lora", "--quantizer", "lszq", "--bits", "5"], "bits must be 4 or 8"),
    ],
)
def test_options_a_model_does_not_take_are_errors(
    single: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "x.pt"
    line = _error(_train(*args, "--cr", "16", "--data", str(single), "--out", str(out)))
    assert message in line
    if "takes no option" in line:
        assert "models that take it: lora" in line
    assert not out.exists()


# -- DualNet-MP on paired data -------------------------------------------------------------


def test_dualnet_mp_two_stage_on_paired_data(paired: Path, tmp_path: Path) -> None:
    out = tmp_path / "dualnet.pt"
    summary = _ok(
        _train("--model", "dualnet-mp", "--cr", "8", "--data", str(paired), "--out", str(out))
    )
    stages = summary["stage_losses"]
    assert len(stages["stage1"]) == 2 and len(stages["stage2"]) == 2
    assert stages["stage1"][-1] < stages["stage1"][0]
    assert stages["stage2"][-1] < stages["stage2"][0]
    assert summary["epochs_run"] == 2 and len(summary["val_nmse_history"]) == 2

    loaded = load_model("dualnet-mp", checkpoint=out)
    assert loaded.cr == 8 and loaded.metadata["recipe"]["epochs_per_stage"] == 2
    assert loaded.metadata["data"]["val_samples"] == 16
    gain = loaded.metadata["recipe"]["magnitude_gain"]
    assert gain > 1.0 and float(loaded.model.decoder.magnitude_gain) == pytest.approx(gain)
    dl, ul = load_paired(paired / "DATA_Hvalin.mat")
    with torch.no_grad():
        recon = loaded.model(torch.from_numpy(dl), torch.from_numpy(ul)).numpy()
    val_db = float(nmse(dl, recon, convention="linear"))
    assert val_db == pytest.approx(summary["best_val_nmse_db"], abs=1e-4)
    assert loaded.metadata["val_nmse_db"] == pytest.approx(val_db, abs=1e-4)


def test_dualnet_mp_without_ul_data_says_how_to_make_it(single: Path, tmp_path: Path) -> None:
    line = _error(
        _train(
            "--model",
            "dualnet-mp",
            "--cr",
            "8",
            "--data",
            str(single),
            "--out",
            str(tmp_path / "x.pt"),
        )
    )
    assert "HT_UL" in line and "csideploy data synth --paired" in line
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume"], "--resume is not supported for dualnet-mp"),
        (["--train-snr", "10"], "--train-snr is not supported for dualnet-mp"),
        (["--quantizer", "lsq"], "takes no option 'quantizer'"),
    ],
)
def test_dualnet_mp_refuses_what_its_recipe_cannot_do(
    paired: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    line = _error(
        _train(
            "--model",
            "dualnet-mp",
            "--cr",
            "8",
            *args,
            "--data",
            str(paired),
            "--out",
            str(tmp_path / "x.pt"),
        )
    )
    assert message in line
