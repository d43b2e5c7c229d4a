"""DualNet-MP's two-stage training recipe and its SMAPE loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from csideploy.errors import ShapeError
from csideploy.models.registry import (
    InputSpec,
    check_input,
)
from csideploy.models.zoo.dualnet_mp.handset import (
    as_dualnet_mp,
    fit_magnitude_gain,
    fit_sign_positions,
)
from csideploy.models.zoo.dualnet_mp.model import (
    csi_features,
    ul_magnitude,
)


def smape_loss(
    magnitude: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    magnitude_hat: torch.Tensor,
    cos_hat: torch.Tensor,
    sin_hat: torch.Tensor,
) -> torch.Tensor:
    """Eq. 13: ||m Cos - m_hat Cos_hat||^2 + ||m Sin - m_hat Sin_hat||^2, mean per entry."""
    real = magnitude * cos - magnitude_hat * cos_hat
    imag = magnitude * sin - magnitude_hat * sin_hat
    return (real * real + imag * imag).mean()


@dataclass(frozen=True)
class DualNetMPTrainResult:
    """Per-epoch mean training losses of both stages, in units of g sqrt(2) |H|."""

    stage1_loss: tuple[float, ...]
    """Eq. 5: MSE of the magnitude."""
    stage2_loss: tuple[float, ...]
    """Eq. 13 SMAPE of the preliminary estimate + MSE of the combined estimate."""
    sign_positions: tuple[int, ...]
    magnitude_gain: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _paired_tensors(
    dl: torch.Tensor | np.ndarray, ul: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    dl_t = torch.as_tensor(np.asarray(dl, dtype=np.float32))
    ul_t = torch.as_tensor(np.asarray(ul, dtype=np.float32))
    check_input(dl_t, InputSpec(), "dl")
    check_input(ul_t, InputSpec(), "ul")
    if len(dl_t) != len(ul_t):
        raise ShapeError(f"dl and ul must pair up: {len(dl_t)} vs {len(ul_t)} samples")
    return dl_t, ul_t


EpochCallback = Callable[[int, int, float], None]
"""`on_epoch(stage, epoch, mean_loss)` after every epoch; stage 1 or 2, epoch 1-based."""


def _run_stage(
    params: list[nn.Parameter],
    epochs: int,
    batches: Callable[[torch.Generator], list[torch.Tensor]],
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    lr: float,
    generator: torch.Generator,
    after_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    optimizer = torch.optim.Adam(params, lr=lr)
    history = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for index in batches(generator):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(index)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            count += len(index)
        history.append(total / max(count, 1))
        if after_epoch is not None:
            after_epoch(epoch + 1, history[-1])
    return history


def _stage_callback(
    model: nn.Module, stage: int, on_epoch: EpochCallback | None
) -> Callable[[int, float], None] | None:
    """`on_epoch` for one stage, restoring every module's train / eval mode after it runs
    (the callback may evaluate the model; stage 2 keeps the frozen branch in eval mode)."""
    if on_epoch is None:
        return None

    def after_epoch(epoch: int, loss: float) -> None:
        modes = [(module, module.training) for module in model.modules()]
        try:
            on_epoch(stage, epoch, loss)
        finally:
            for module, training in modes:
                module.training = training

    return after_epoch


def train_dualnet_mp(
    model: nn.Module,
    dl: torch.Tensor | np.ndarray,
    ul: torch.Tensor | np.ndarray,
    epochs_stage1: int,
    epochs_stage2: int,
    *,
    batch_size: int = 200,
    lr: float = 1e-3,
    seed: int = 0,
    fit_to_data: bool = True,
    on_epoch: EpochCallback | None = None,
) -> DualNetMPTrainResult:
    """The paper's two-stage training, in place, on paired DL / UL CSI (N, 2, 32, 32).

    With `fit_to_data` the sign positions and the magnitude gain are first fitted to `dl`
    (`fit_sign_positions`, `fit_magnitude_gain`); otherwise the model's own are kept.
    Stage 1 trains the magnitude branch on eq. 5 (MSE of the magnitude). Stage 2 freezes it
    and trains the phase encoder, phase decoder and combining network on eq. 13 (SMAPE of the
    preliminary estimate) plus the MSE of the combined estimate (eq. 8), both in the units of
    `csi_features(x, g)`. Adam, constant learning rate (the public code's 1e-3).
    The data follow the model onto its device. `on_epoch(stage, epoch, mean_loss)` runs after
    every epoch (validation, progress); the modules' train / eval modes are restored after it.
    The model is left in eval mode.
    """
    m = as_dualnet_mp(model)
    dl_t, ul_t = _paired_tensors(dl, ul)
    if fit_to_data:
        fit_sign_positions(m, dl_t)
        fit_magnitude_gain(m, dl_t)
    device = next(m.parameters()).device
    dl_t, ul_t = dl_t.to(device), ul_t.to(device)
    generator = torch.Generator().manual_seed(seed)

    def batches(gen: torch.Generator) -> list[torch.Tensor]:
        order = torch.randperm(len(dl_t), generator=gen).to(device)
        return list(order.split(batch_size))

    mag_params = [p for module in m.magnitude_modules() for p in module.parameters()]
    mag_ids = {id(p) for p in mag_params}
    other_params = [p for p in m.parameters() if id(p) not in mag_ids]

    gain = m.decoder.magnitude_gain

    def stage1_loss(index: torch.Tensor) -> torch.Tensor:
        x, side = dl_t[index], ul_magnitude(ul_t[index], gain)
        target = csi_features(x, gain).magnitude
        code = m.encoder.magnitude(target)
        estimate = m.decoder.magnitude(code / m.decoder.magnitude_levels, side)
        return F.mse_loss(estimate, target)

    m.train()
    stage1 = _run_stage(
        mag_params,
        epochs_stage1,
        batches,
        stage1_loss,
        lr,
        generator,
        _stage_callback(m, 1, on_epoch),
    )

    def stage2_loss(index: torch.Tensor) -> torch.Tensor:
        x = dl_t[index]
        truth = csi_features(x, gain)
        sin = truth.sign * torch.sqrt(torch.clamp(1.0 - truth.cos * truth.cos, min=0.0))
        parts = m.decoder.parts(m.encoder(x), ul_t[index])
        smape = smape_loss(truth.magnitude, truth.cos, sin, parts.magnitude, parts.cos, parts.sin)
        target = torch.cat((truth.magnitude * truth.cos, truth.magnitude * sin), dim=1)
        return smape + F.mse_loss(parts.combined, target, reduction="none").sum(1).mean()

    for p in mag_params:
        p.requires_grad_(False)
    for module in m.magnitude_modules():
        module.eval()  # the frozen branch runs as deployed: hard SSQ
    try:
        stage2 = _run_stage(
            other_params,
            epochs_stage2,
            batches,
            stage2_loss,
            lr,
            generator,
            _stage_callback(m, 2, on_epoch),
        )
    finally:
        for p in mag_params:
            p.requires_grad_(True)
        m.eval()
    return DualNetMPTrainResult(
        stage1_loss=tuple(stage1),
        stage2_loss=tuple(stage2),
        sign_positions=tuple(int(i) for i in m.encoder.sign_positions),
        magnitude_gain=float(gain),
    )
