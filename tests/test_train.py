"""Training: the papers' recipe, checkpoints with metadata, resume, schedule, init, CLI."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from csideploy.calibration.mat_write import save_csi_mat
from csideploy.calibration.synthetic import generate
from csideploy.cli import main
from csideploy.errors import CheckpointError, CsiDeployError, DataError, ShapeError
from csideploy.evaluate import evaluate
from csideploy.models import build
from csideploy.models.checkpoint import load_checkpoint
from csideploy.models.noise import built_in_training_snr
from csideploy.train import (
    LrSchedule,
    TrainConfig,
    finetune,
    fit,
    init_weights,
    model_options,
    resume_path,
    train,
)
from csideploy.train.init import OUTPUT_PATH_BN_WEIGHT, output_path_norms

_TRAIN = "train --model crnet --cr 16 --no-progress"
TINY = TrainConfig(epochs=3, batch_size=16, lr=5e-3, scheduler="const", device="cpu", threads=1)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Single-threaded kernels: a shared 2-core runner stalls multi-threaded ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def csi() -> np.ndarray:
    return generate(96, scenario="indoor", seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, csi: np.ndarray) -> Path:
    """A tiny dataset directory in the COST2100 file layout."""
    root = tmp_path_factory.mktemp("data")
    save_csi_mat(root / "DATA_Htrainin.mat", csi[:64])
    save_csi_mat(root / "DATA_Hvalin.mat", csi[64:80])
    save_csi_mat(root / "DATA_Htestin.mat", csi[80:])
    return root


def test_config_validates_its_options() -> None:
    for bad in (
        {"epochs": 0},
        {"batch_size": -1},
        {"lr": 0.0},
        {"scheduler": "step"},
        {"warmup_epochs": -1},
        {"device": "tpu"},
        {"lr": 1e-3, "lr_min": 1e-2},
        {"threads": 0},
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    assert TrainConfig().batch_size == 200
    assert TrainConfig().betas == (0.9, 0.999)


def test_warmup_is_clamped_for_short_runs() -> None:
    assert TrainConfig(epochs=1000).effective_warmup_epochs == 30
    assert TrainConfig(epochs=50).effective_warmup_epochs == 5
    assert TrainConfig(epochs=5).effective_warmup_epochs == 0
    assert TrainConfig(epochs=1000, scheduler="const").effective_warmup_epochs == 0


def test_schedule_warms_up_linearly_then_anneals_to_lr_min() -> None:
    config = TrainConfig(epochs=100, warmup_epochs=10)
    schedule = LrSchedule.from_config(config, steps_per_epoch=50)
    assert schedule.total_steps == 5000 and schedule.warmup_steps == 500
    assert schedule(0) == 0.0
    assert schedule(250) == pytest.approx(1e-3)
    assert schedule(500) == pytest.approx(2e-3)
    middle = 500 + (5000 - 500) // 2
    assert schedule(middle) == pytest.approx((2e-3 + 5e-5) / 2)
    assert schedule(5000) == pytest.approx(5e-5)
    quarter = 500 + (5000 - 500) // 4
    expected = 5e-5 + (2e-3 - 5e-5) * (1 + math.cos(math.pi / 4)) / 2
    assert schedule(quarter) == pytest.approx(expected)
    lrs = [schedule(s) for s in range(500, 5001, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_const_schedule_is_constant() -> None:
    schedule = LrSchedule.from_config(TrainConfig(epochs=10, scheduler="const", lr=1e-3), 7)
    assert {schedule(s) for s in (0, 1, 35, 70)} == {1e-3}


def test_init_weights_sets_batchnorm_and_xavier() -> None:
    model = build("clnet", 64)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(3.0)
                m.bias.fill_(-2.0)
    torch.manual_seed(0)
    init_weights(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    feature = model.decoder.decoder_feature
    output_path = {feature.conv5x5_bn.bn, feature.CRBlock1.conv1x1.bn, feature.CRBlock2.conv1x1.bn}
    assert len(bns) > len(output_path)
    for bn in bns:
        weight = OUTPUT_PATH_BN_WEIGHT if bn in output_path else 1.0
        assert torch.all(bn.weight == weight) and torch.all(bn.bias == 0)
    fc = model.encoder.replace_efc.weight  # Conv1d(2048, 32, 1): fan_in 2048, fan_out 32
    bound = math.sqrt(6 / (2048 + 32))
    assert fc.abs().max() <= bound
    assert fc.abs().max() > 0.9 * bound


@pytest.mark.parametrize("name", ["crnet", "clnet", "cllwcsinet", "clnet-cl", "crnet-cl"])
def test_first_output_has_the_spread_of_released_csi(name: str) -> None:
    """With the output-path BatchNorms scaled down, the untrained decoder's output spreads
    about 0.5 like per-sample scaled CSI, not like unit-spread logits."""
    torch.manual_seed(0)
    model = init_weights(build(name, 4)).train()
    assert output_path_norms(model.decoder)
    x = 0.5 + 0.03 * torch.randn(64, 2, 32, 32)
    with torch.no_grad():
        spread = float((model(x) - 0.5).std())
    assert spread < 0.06, spread


def test_a_spent_time_budget_starts_no_epoch(csi: np.ndarray, tmp_path: Path) -> None:
    """`max_minutes` counts resumed time: a resume whose budget is spent saves the best
    weights of the epochs already run, and a fresh run with no budget says so."""
    state = tmp_path / "run.resume"
    torch.manual_seed(0)
    first = fit(init_weights(build("crnet", 16)), csi[:64], csi[64:], replace(TINY, epochs=1),
                progress=False, state_path=state)
    budgeted = replace(TINY, epochs=3, max_minutes=0)
    resumed = fit(init_weights(build("crnet", 16)), csi[:64], csi[64:], budgeted,
                  progress=False, state_path=state, resume=True)
    assert (resumed.epochs_run, resumed.best_epoch) == (1, 1)
    assert resumed.val_nmse_history == first.val_nmse_history
    for key, value in first.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    with pytest.raises(CsiDeployError, match=r"time budget \(0 min\) was spent before the first"):
        fit(build("crnet", 16), csi[:64], csi[64:], budgeted, progress=False)
    with pytest.raises(ValueError, match="max_minutes must be a number of minutes >= 0"):
        TrainConfig(max_minutes=-1)


def test_a_short_run_on_built_in_data_reaches_negative_nmse() -> None:
    """CLNet CR 1/4 on 1,000 built-in indoor samples: 100 Adam steps take the validation NMSE
    below 0 dB (better than the constant 0.5). With every BatchNorm weight at 1 the same run
    stays above +5 dB (measured: +7.3 dB), the plateau the output-path initialisation removes."""
    train_x = generate(1000, scenario="indoor", seed=11)
    val_x = generate(300, scenario="indoor", seed=12)
    torch.manual_seed(0)
    model = init_weights(build("clnet", 4))
    config = TrainConfig(epochs=5, batch_size=50, lr=2e-3, warmup_epochs=0, device="cpu", threads=1)
    result = fit(model, train_x, val_x, config, progress=False)
    assert result.best_val_nmse_db < -0.5, result.val_nmse_history
    assert evaluate(result.model, val_x).nmse_db == pytest.approx(result.best_val_nmse_db, abs=1e-3)


def test_fit_lowers_the_loss_and_keeps_the_best_weights(csi: np.ndarray) -> None:
    torch.manual_seed(0)
    model = init_weights(build("crnet", 16))
    threads = torch.get_num_threads()
    result = fit(model, csi[:64], csi[64:80], TINY, progress=False)
    assert torch.get_num_threads() == threads
    assert result.epochs_run == 3 and len(result.loss_history) == 3
    assert result.loss_history[-1] < result.loss_history[0]
    assert result.best_val_nmse_db == min(result.val_nmse_history)
    assert result.val_nmse_history[result.best_epoch - 1] == result.best_val_nmse_db
    assert not model.training
    assert evaluate(model, csi[64:80]).nmse_db == pytest.approx(result.best_val_nmse_db, abs=1e-4)


def test_finetune_starts_from_the_given_weights(csi: np.ndarray) -> None:
    torch.manual_seed(1)
    model = init_weights(build("crnet", 16))
    before = evaluate(model, csi[64:80]).nmse_db
    result = finetune(model, csi[:64], csi[64:80], epochs=1, lr=1e-4, batch_size=16, threads=1)
    assert result.epochs_run == 1 and result.model is model
    # one gentle epoch moves the weights a little; it does not start over
    assert result.best_val_nmse_db != before
    assert abs(result.best_val_nmse_db - before) < 10


def test_fit_rejects_wrong_shapes(csi: np.ndarray) -> None:
    with pytest.raises(ShapeError, match="training data"):
        fit(build("crnet", 16), csi[:8, 0], csi[:8], TINY, progress=False)


def test_train_writes_a_loadable_checkpoint_with_metadata(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "crnet.pt"
    result = train("crnet", 16, dataset, TINY, out_path=out, progress=False)
    assert result.checkpoint == out and out.is_file()
    loaded = load_checkpoint(out)
    assert loaded.name == "crnet" and loaded.cr == 16
    meta = loaded.metadata
    assert meta["epochs"] == 3
    assert meta["training"]["batch_size"] == 16 and meta["training"]["scheduler"] == "const"
    assert meta["data"]["train_samples"] == 64 and meta["data"]["val_samples"] == 16
    assert meta["nmse_convention"] == "linear"
    assert meta["val_nmse_db"] == pytest.approx(result.best_val_nmse_db)
    assert meta["torch_version"] == torch.__version__
    assert "optimizer" not in torch.load(out, map_location="cpu", weights_only=True)
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, result.model.state_dict()[key])
    # the resume state loads without executing pickles
    state = torch.load(resume_path(out), map_location="cpu", weights_only=True)
    assert state["epoch"] == 3


def test_resume_continues_from_the_saved_epoch(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.pt"
    first = train(
        "crnet",
        16,
        dataset,
        TrainConfig(**{**_tiny_kwargs(), "epochs": 2}),
        out_path=out,
        progress=False,
    )
    assert first.epochs_run == 2
    state = torch.load(resume_path(out), map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 2 * 4

    resumed = train("crnet", 16, dataset, TINY, out_path=out, resume=True, progress=False)
    assert resumed.resumed_from_epoch == 2
    assert resumed.epochs_run == 3
    assert resumed.loss_history[:2] == first.loss_history
    assert len(resumed.loss_history) == 3

    # same result as an uninterrupted run: the state (weights, Adam moments, RNG) was restored
    straight = train("crnet", 16, dataset, TINY, out_path=tmp_path / "straight.pt", progress=False)
    assert resumed.loss_history == pytest.approx(straight.loss_history, rel=1e-4)
    assert torch.load(resume_path(out), weights_only=True)["step"] == 3 * 4


def test_resume_without_state_is_an_error(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no training state"):
        train("crnet", 16, dataset, TINY, out_path=tmp_path / "x.pt", resume=True, progress=False)


def test_init_from_must_match(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="init_from"):
        train(
            "crnet",
            16,
            dataset,
            TINY,
            out_path=tmp_path / "x.pt",
            progress=False,
            init_from=build("crnet", 32),
        )


def test_missing_data_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        train("crnet", 16, missing, TINY, out_path=tmp_path / "x.pt", progress=False)


def test_cli_synth_train_evaluate(tmp_path: Path) -> None:
    """The whole path a user takes: make data, train on it, evaluate on its test split."""
    data, out = tmp_path / "synth", tmp_path / "cli.pt"
    runner = CliRunner()
    synth = "data synth --scenario indoor -n 60 --seed 2 --val-fraction 0.2 --test-fraction 0.2"
    result = runner.invoke(main, [*synth.split(), "-o", str(data), "--no-progress"])
    assert result.exit_code == 0, result.output
    options = "--epochs 2 --batch-size 12 --scheduler const --lr 5e-3 --device cpu --threads 1"
    result = runner.invoke(
        main,
        [*_TRAIN.split(), "--data", str(data), *options.split(), "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["epochs_run"] == 2 and summary["nmse_convention"] == "linear"
    meta = load_checkpoint(out).metadata
    assert meta["data"]["train_samples"] == 36
    assert meta["data"]["synthetic"]["scenario"] == "indoor"
    assert meta["data"]["synthetic"]["seed"] == 2

    evaluate = ["evaluate", "--model", "crnet", "--checkpoint", str(out), "--data", str(data)]
    result = runner.invoke(main, [*evaluate, "--convention", "sample_db"])
    assert result.exit_code == 0, result.output
    assert "NMSE" in result.output and "sample_db" in result.output
    assert "12 samples" in result.output
    result = runner.invoke(main, [*evaluate, "--json"])
    report = json.loads(result.output)
    assert report["convention"] == "linear" and report["n_samples"] == 12
    assert report["data"].endswith("DATA_Htestin.mat")


def test_cli_train_missing_data_dir_is_one_line_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dir"
    result = CliRunner().invoke(
        main,
        [*_TRAIN.split(), "--data", str(missing), "--epochs", "1", "--out", str(tmp_path / "x")],
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no_such_dir" in lines[0]


def test_cli_train_bad_option_is_exit_2(dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [*_TRAIN.split(), "--data", str(dataset), "--epochs", "0", "--out", str(tmp_path / "x")],
    )
    assert result.exit_code == 2
    assert "epochs" in result.output


def _tiny_kwargs() -> dict[str, object]:
    return {
        "epochs": 3,
        "batch_size": 16,
        "lr": 5e-3,
        "scheduler": "const",
        "device": "cpu",
        "threads": 1,
    }


def test_config_checks_the_training_snr() -> None:
    assert TrainConfig(train_snr_db=10).train_snr_db == 10
    assert TrainConfig(train_snr_db=-5.0).as_dict()["train_snr_db"] == -5.0
    for bad in (float("nan"), float("inf"), "10"):
        with pytest.raises(ValueError, match="train_snr_db"):
            TrainConfig(train_snr_db=bad)


def test_fit_with_training_noise_leaves_no_hook(csi: np.ndarray) -> None:
    """The noise changes training (same seed, other losses) and is gone afterwards."""
    runs = {}
    for snr in (None, 0.0):
        torch.manual_seed(0)
        model = init_weights(build("crnet", 16))
        config = TrainConfig(**{**_tiny_kwargs(), "epochs": 1, "train_snr_db": snr})
        runs[snr] = fit(model, csi[:64], csi[64:80], config, progress=False)
        assert not model.decoder._forward_pre_hooks
    assert runs[0.0].loss_history != runs[None].loss_history
    model = runs[0.0].model.train()
    with torch.no_grad():
        assert torch.equal(model(torch.from_numpy(csi[:4])), model(torch.from_numpy(csi[:4])))


def test_fit_keeps_a_models_own_channel_and_refuses_another_snr(csi: np.ndarray) -> None:
    model = build("cllwcsinet", 16, train_snr_db=40.0)
    config = TrainConfig(**{**_tiny_kwargs(), "epochs": 1, "train_snr_db": 40.0})
    fit(model, csi[:32], csi[64:80], config, progress=False)
    assert not model.decoder._forward_pre_hooks
    other = TrainConfig(**{**_tiny_kwargs(), "epochs": 1, "train_snr_db": 10.0})
    with pytest.raises(CsiDeployError, match=r"built to train with codeword noise at 40\.0 dB"):
        fit(model, csi[:32], csi[64:80], other, progress=False)


def test_model_options_follow_the_builders() -> None:
    assert model_options("cllwcsinet", None, 20.0) == {"train_snr_db": 20.0}
    assert model_options("crnet", None, 20.0) == {}  # noise from a hook in `fit`
    assert model_options("lora", {"quantizer": "lszq", "bits": 4, "blocks": None}) == {
        "quantizer": "lszq",
        "bits": 4,
    }
    with pytest.raises(CsiDeployError, match=r"takes no option 'quantizer'.*take it: lora"):
        model_options("clnet", {"quantizer": "lsq"})
    with pytest.raises(CsiDeployError, match="--train-snr is not supported for dualnet-mp"):
        model_options("dualnet-mp", None, 10.0)


def test_train_records_build_options_in_the_checkpoint(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "cllw.pt"
    config = TrainConfig(**{**_tiny_kwargs(), "epochs": 1, "train_snr_db": 30.0})
    result = train("cllwcsinet", 16, dataset, config, out_path=out, progress=False)
    assert result.as_dict()["build_options"] == {"train_snr_db": 30.0}
    loaded = load_checkpoint(out)
    assert loaded.metadata["build_options"] == {"train_snr_db": 30.0}
    assert built_in_training_snr(loaded.model) == 30.0


def test_cli_train_that_diverges_stops_with_one_line_and_writes_no_checkpoint(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "diverged.pt"
    options = "--epochs 3 --batch-size 16 --scheduler const --device cpu --threads 1"
    result = CliRunner().invoke(
        main,
        [*_TRAIN.split(), "--data", str(dataset), *options.split(), "--lr", "1e30",
         "--out", str(out)],
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: training diverged at epoch 1: mean loss ")
    assert result.stderr.endswith(
        "(is the learning rate too high?); no checkpoint written\n"
    ), result.stderr
    assert result.stderr.count("\n") == 1 and "nan dB" in result.stderr
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor a resume file
