"""The training loop: `fit` (an in-memory model and arrays) and `finetune`.

Adam with the configured betas, MSE between the reconstruction and the input, the learning
rate set every iteration from `LrSchedule`, the weights with the best validation NMSE kept.
Under torchrun the same loop runs in every process (see `csideploy.train.distributed`).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.errors import CheckpointError, CsiDeployError, DataError, ShapeError
from csideploy.models.noise import training_noise
from csideploy.models.registry import CSI_SHAPE, CsiAutoencoder
from csideploy.train import distributed
from csideploy.train.config import NMSE_CONVENTION, LrSchedule, TrainConfig, TrainResult
from csideploy.train.resume import RunState, load_state, save_state
from csideploy.train.sync_norm import swap_norms


def fit(
    model: CsiAutoencoder,
    train_x: np.ndarray | torch.Tensor,
    val_x: np.ndarray | torch.Tensor,
    config: TrainConfig,
    *,
    progress: bool = True,
    state_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train `model` in place on `train_x`, keeping the weights with the best validation NMSE.

    Does not re-initialise the model (see `init_weights`). With `state_path`, the resumable
    state is written there after every epoch; `resume=True` continues from it. On return the
    model is in eval mode, on the device it came from, holding the best weights.
    `config.train_snr_db` adds codeword noise in training mode (see `training_noise`).
    """
    with torch_threads(config.threads), training_noise(model, config.train_snr_db):
        return _fit(
            model, train_x, val_x, config, progress=progress, state_path=state_path, resume=resume
        )


def _fit(
    model: CsiAutoencoder,
    train_x: np.ndarray | torch.Tensor,
    val_x: np.ndarray | torch.Tensor,
    config: TrainConfig,
    *,
    progress: bool,
    state_path: str | os.PathLike[str] | None,
    resume: bool,
) -> TrainResult:
    train_t = _as_csi_tensor(train_x, "training data")
    val_t = _as_csi_tensor(val_x, "validation data")
    device = distributed.device_for(config)
    home = next(model.parameters()).device
    model.to(device)
    train_t = train_t.to(device)
    val_t = val_t.to(device)
    size, rank = distributed.world()
    if size > 1:
        distributed.check_split(len(train_t), config.batch_size, size)
        distributed.refuse_data_dependent_init(model)

    steps_per_epoch = math.ceil(len(train_t) / config.batch_size)
    schedule = LrSchedule.from_config(config, steps_per_epoch)
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule(0), betas=config.betas)
    generator = torch.Generator().manual_seed(config.seed)
    run = RunState()
    if resume:
        if state_path is None:
            raise CheckpointError("resume requested but no state path was given")
        run = load_state(Path(state_path), model, optimizer, generator)
    start_epoch = run.epoch
    started = time.perf_counter() - run.seconds
    restore = swap_norms(model) if size > 1 else None
    net = distributed.wrap(model, device) if size > 1 else model
    try:
        for epoch in range(start_epoch, config.epochs):
            if _budget_spent(config, time.perf_counter() - started, device):
                break
            order = torch.randperm(len(train_t), generator=generator).to(device)
            if size > 1:
                distributed.seed_noise(config.seed, epoch)
            bar = progress_bar(steps_per_epoch, epoch, config.epochs, progress and rank == 0)
            epoch_loss = _train_epoch(net, train_t, order, optimizer, schedule, run, config, bar)
            val_db = _shared_val_nmse_db(model, val_t, config.eval_batch_size, device)
            run.record(epoch + 1, epoch_loss, val_db, model)
            run.seconds = time.perf_counter() - started
            if bar is not None:
                bar.set_postfix(loss=f"{epoch_loss:.3e}", val_nmse=f"{val_db:.2f} dB")
                bar.close()
            if state_path is not None and rank == 0:
                save_state(Path(state_path), model, optimizer, generator, run, config)
    finally:
        if restore is not None:
            restore()

    if run.best_state is None:
        raise CsiDeployError(
            f"the time budget ({config.max_minutes} min) was spent before the first epoch; "
            "nothing to save"
        )
    return run.best_result(model, home, resumed_from_epoch=start_epoch)


def _train_epoch(
    net: nn.Module,
    train_t: torch.Tensor,
    order: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: LrSchedule,
    run: RunState,
    config: TrainConfig,
    bar: Any,
) -> float:
    """One pass over `order` in global batches; the mean training MSE over all samples.

    Under a process group each rank trains on its share of every global batch, its loss
    weighted so that the averaged gradient is that of the global batch's mean loss.
    """
    net.train()
    size = distributed.world()[0]
    total_loss = 0.0
    for i in range(math.ceil(len(train_t) / config.batch_size)):
        index = order[i * config.batch_size : (i + 1) * config.batch_size]
        weight = 1.0
        if size > 1:
            index, weight = distributed.rank_part(index)
        batch = train_t[index]
        lr = schedule(run.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(net(batch), batch)
        (loss * weight if weight != 1.0 else loss).backward()
        optimizer.step()
        run.step += 1
        total_loss += loss.item() * len(batch)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3e}", lr=f"{lr:.2e}")
    if size > 1:
        total_loss = distributed.total(total_loss, train_t.device)
    return total_loss / len(train_t)


def _shared_val_nmse_db(
    model: nn.Module, val_t: torch.Tensor, batch_size: int, device: torch.device
) -> float:
    """Validation NMSE of the (unwrapped) model: computed by rank 0, the same on every rank."""
    size, rank = distributed.world()
    if size == 1:
        return val_nmse_db(model, val_t, batch_size)
    value = val_nmse_db(model, val_t, batch_size) if rank == 0 else math.nan
    return distributed.from_main(value, device)


def _budget_spent(config: TrainConfig, seconds: float, device: torch.device) -> bool:
    """Whether the time budget is spent: rank 0's clock decides for every rank."""
    spent = config.max_minutes is not None and seconds >= 60 * config.max_minutes
    if distributed.world()[0] == 1:
        return spent
    return bool(distributed.from_main(float(spent), device))


def finetune(
    model: CsiAutoencoder,
    train_x: np.ndarray | torch.Tensor,
    val_x: np.ndarray | torch.Tensor,
    *,
    epochs: int,
    lr: float = 1e-4,
    batch_size: int = 200,
    seed: int = 0,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
) -> TrainResult:
    """Short constant-lr training of an already trained (e.g. surgically changed) model."""
    config = TrainConfig(
        epochs=epochs,
        lr=lr,
        lr_min=0.0,
        batch_size=batch_size,
        scheduler="const",
        warmup_epochs=0,
        seed=seed,
        device=device,
        threads=threads,
    )
    return fit(model, train_x, val_x, config, progress=progress)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch CPU threads, restoring the previous count afterwards."""
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _as_csi_tensor(x: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.dim() != 4 or tuple(t.shape[1:]) != CSI_SHAPE:
        raise ShapeError(f"{what}: expected shape (N, 2, 32, 32), got {tuple(t.shape)}")
    if len(t) == 0:
        raise DataError(f"{what}: no samples")
    return t.to(torch.float32)


@torch.no_grad()
def val_nmse_db(
    model: nn.Module, x: torch.Tensor, batch_size: int, *, side: torch.Tensor | None = None
) -> float:
    """Validation NMSE in dB, linear mean over the whole set (the papers' definition).

    `side` is the decoder's side information per sample (DualNet-MP: the UL CSI).
    """
    from csideploy.metrics import nmse

    model.eval()
    parts = []
    for i in range(0, len(x), batch_size):
        extra = () if side is None else (side[i : i + batch_size],)
        parts.append(model(x[i : i + batch_size], *extra))
    recon = torch.cat(parts)
    return float(nmse(x.cpu().numpy(), recon.cpu().numpy(), convention=NMSE_CONVENTION))


def progress_bar(
    total: int, epoch: int, epochs: int, enabled: bool, *, desc: str | None = None
) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    label = desc or f"epoch {epoch + 1}/{epochs}"
    unit = "batch" if desc is None else "epoch"
    return tqdm(total=total, desc=label, unit=unit, leave=True)
