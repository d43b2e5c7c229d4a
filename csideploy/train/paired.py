"""DualNet-MP's two-stage recipe on paired UL/DL files (`HT` and `HT_UL`).

It reports validation NMSE with the UL side information and keeps no resumable state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csideploy.errors import CheckpointError, DataError
from csideploy.models.registry import CsiAutoencoder
from csideploy.train.config import PAIRED_DATA_HINT, TrainConfig, TrainResult, resolve_device
from csideploy.train.loop import progress_bar, torch_threads, val_nmse_db
from csideploy.train.options import initial_model, model_options
from csideploy.train.resume import RunState
from csideploy.train.run_info import describe_data, run_metadata, with_checkpoint


def check_paired_run(model_name: str, config: TrainConfig, resume: bool) -> None:
    """Refuse what the two-stage recipe cannot do, before any data is read."""
    if resume:
        raise CheckpointError(
            f"--resume is not supported for {model_name}: its two-stage recipe keeps no "
            "resumable state; train again without --resume"
        )
    model_options(model_name, None, config.train_snr_db)


def train_paired(
    model_name: str,
    cr: int,
    files: tuple[Path, Path],
    config: TrainConfig,
    *,
    out: Path,
    progress: bool,
    init_from: CsiAutoencoder | None,
    options: Mapping[str, Any] | None,
) -> TrainResult:
    """DualNet-MP's two stages (`train_dualnet_mp`), `config.epochs` each, constant `lr`.

    Validation NMSE (with the UL CSI as side information) is measured after every stage-2
    epoch; the checkpoint holds the best of those weights.
    """
    from csideploy.models.checkpoint import save_checkpoint

    train_dl, train_ul = _load_pairs(files[0], model_name)
    val_dl, val_ul = _load_pairs(files[1], model_name)
    model = initial_model(model_name, cr, config, options, init_from)
    with torch_threads(config.threads):
        result, stages = _run_two_stages(
            model, (train_dl, train_ul), (val_dl, val_ul), config, progress
        )
    data_info = {
        **describe_data(files[0], len(train_dl), files[1], len(val_dl)),
        "paired": "HT (DL) and HT_UL (UL) per file",
    }
    metadata = run_metadata(result, config, data_info, init_from)
    metadata["recipe"] = {
        "name": f"{model_name} two-stage",
        "epochs_per_stage": config.epochs,
        "learning_rate": "constant lr (scheduler, warm-up and lr_min do not apply)",
        "stage1_loss": list(stages.stage1_loss),
        "stage2_loss": list(stages.stage2_loss),
        "magnitude_gain": stages.magnitude_gain,
        "val_side_information": "UL CSI (HT_UL)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, result.model, metadata=metadata)
    return with_checkpoint(result, out)


def _run_two_stages(
    model: CsiAutoencoder,
    train_pair: tuple[np.ndarray, np.ndarray],
    val_pair: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    progress: bool,
) -> tuple[TrainResult, Any]:
    """Train in place; the result's histories are those of stage 2 (the end-to-end model)."""
    from csideploy.models.registry import get_entry

    recipe = get_entry(model.model_name).paired_recipe
    device = resolve_device(config.device)
    home = next(model.parameters()).device
    model.to(device)
    val_dl, val_ul = (torch.from_numpy(a).to(device) for a in val_pair)
    run = RunState()
    bar = progress_bar(2 * config.epochs, -1, 0, progress, desc=f"{model.model_name} 2 stages")
    started = time.perf_counter()

    def on_epoch(stage: int, epoch: int, loss: float) -> None:
        postfix = {"stage": stage, "loss": f"{loss:.3e}"}
        if stage == 2:
            val_db = val_nmse_db(model, val_dl, config.eval_batch_size, side=val_ul)
            run.record(epoch, loss, val_db, model)
            postfix["val_nmse"] = f"{val_db:.2f} dB"
        if bar is not None:
            bar.update(1)
            bar.set_postfix(**postfix)

    try:
        stages = recipe(
            model,
            *train_pair,
            config.epochs,
            config.epochs,
            batch_size=config.batch_size,
            lr=config.lr,
            seed=config.seed,
            on_epoch=on_epoch,
        )
    finally:
        if bar is not None:
            bar.close()
    run.seconds = time.perf_counter() - started
    result = run.best_result(
        model,
        home,
        stage_losses={"stage1": stages.stage1_loss, "stage2": stages.stage2_loss},
    )
    return result, stages


def _load_pairs(path: Path, model_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(DL, UL) of a paired file, or an error saying the model needs paired data."""
    from csideploy.calibration.paired import load_paired

    try:
        return load_paired(path)
    except DataError as error:
        raise DataError(
            f"{model_name} needs paired UL/DL data (variables HT = DL and HT_UL = UL in the "
            f"train and val files): {error}; {PAIRED_DATA_HINT}"
        ) from None
