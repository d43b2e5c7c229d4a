"""An additive white Gaussian noise (AWGN) feedback channel between encoder and decoder.

SNR convention: the signal power is measured **per sample** on the codeword the encoder
emits, P_n = ||c_n||^2 / M for sample n (M = codeword length, float codeword before any
quantisation), and each element of that sample receives independent noise N(0, P_n / 10^(SNR/10)).
A per-sample power makes the noise of one sample independent of the rest of its batch (the
CLLWCsiNet public code measures the power over the whole batch instead). `snr_db=inf` means a
noiseless channel.

Ways to use it:

- `add_awgn(codeword, snr_db, generator)`: the function itself, for any model.
- `AwgnChannel(snr_db, train_snr_db=...)`: a module; CLLWCsiNet's decoder holds one and adds
  noise only in training mode unless `snr_db` (exposed as `decoder.noise_snr_db`) is set.
- `codeword_noise(model, snr_db)`: a context manager that puts the channel in front of ANY
  model's decoder, so that `model(x)` decodes a noisy codeword; `evaluate_with_snr` uses the
  same path to sweep SNRs (what `csideploy evaluate --snr 0,10,20,40` prints).
- `attach_training_noise(model, snr_db)`: the channel in front of ANY model's decoder, active
  in training mode only (`csideploy train --train-snr DB` for models without a built-in one;
  CLLWCsiNet takes `build("cllwcsinet", cr, train_snr_db=DB)` instead).
- `training_noise(model, snr_db)`: a context manager for a training run that uses the
  model's own channel when it has one, else attaches the hook for the run only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch
import torch.utils.hooks
from torch import nn

from csideploy.errors import CsiDeployError, ShapeError


def _check_snr(snr_db: float) -> float:
    snr = float(snr_db)
    if math.isnan(snr) or snr == -math.inf:
        raise CsiDeployError(f"SNR must be a finite number of dB or +inf, got {snr_db!r}")
    return snr


def add_awgn(
    codeword: torch.Tensor, snr_db: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`codeword` (N, ...) plus white Gaussian noise at `snr_db` per sample.

    The noise is drawn from `generator` when given (reproducible sweeps), else from the
    global RNG. An all-zero codeword receives no noise (its power is zero).
    """
    snr = _check_snr(snr_db)
    if codeword.dim() < 2:
        raise ShapeError(f"codeword: expected shape (N, ...), got {tuple(codeword.shape)}")
    if snr == math.inf:
        return codeword
    dims = tuple(range(1, codeword.dim()))
    power = codeword.detach().pow(2).mean(dim=dims, keepdim=True)
    std = torch.sqrt(power / 10.0 ** (snr / 10.0))
    noise = torch.randn(
        codeword.shape, generator=generator, dtype=codeword.dtype, device=codeword.device
    )
    return codeword + noise * std


class AwgnChannel(nn.Module):
    """AWGN on the codeword: always at `snr_db` when set, else at `train_snr_db` in training mode.

    With neither set (or in eval mode with only `train_snr_db`) it is the identity, so an
    exported decoder graph holds no noise.
    """

    def __init__(self, snr_db: float | None = None, *, train_snr_db: float | None = None) -> None:
        super().__init__()
        self.snr_db = None if snr_db is None else _check_snr(snr_db)
        self.train_snr_db = None if train_snr_db is None else _check_snr(train_snr_db)
        self.generator: torch.Generator | None = None

    def active_snr_db(self) -> float | None:
        """The SNR the next forward pass uses, or None for a clean channel."""
        if self.snr_db is not None:
            return self.snr_db
        return self.train_snr_db if self.training else None

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        snr = self.active_snr_db()
        return codeword if snr is None else add_awgn(codeword, snr, self.generator)

    def extra_repr(self) -> str:
        return f"snr_db={self.snr_db}, train_snr_db={self.train_snr_db}"


@contextmanager
def codeword_noise(
    model: nn.Module, snr_db: float, *, generator: torch.Generator | None = None
) -> Iterator[nn.Module]:
    """Within the block, `model(x)` decodes the codeword after an AWGN channel at `snr_db`.

    Works for every zoo model (a forward pre-hook on `model.decoder`); the hook is removed on
    exit, also when the block raises.
    """
    snr = _check_snr(snr_db)
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, nn.Module):
        raise CsiDeployError(f"{type(model).__name__} has no `decoder` submodule to feed noise to")

    def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (add_awgn(args[0], snr, generator), *args[1:])

    handle = decoder.register_forward_pre_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


def attach_training_noise(
    model: nn.Module, snr_db: float, *, generator: torch.Generator | None = None
) -> torch.utils.hooks.RemovableHandle:
    """AWGN at `snr_db` on the codeword whenever `model.decoder` runs in training mode.

    Returns the hook handle (`.remove()` detaches it). Refuses a model whose decoder already
    adds training noise of its own (CLLWCsiNet built with `train_snr_db`).
    """
    snr = _check_snr(snr_db)
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, nn.Module):
        raise CsiDeployError(f"{type(model).__name__} has no `decoder` submodule to feed noise to")
    own = built_in_training_snr(model)
    if own is not None:
        raise CsiDeployError(
            f"the decoder of {getattr(model, 'model_name', type(model).__name__)} already adds "
            f"training noise at {own} dB; do not attach a second channel"
        )

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...] | None:
        if not module.training:
            return None
        return (add_awgn(args[0], snr, generator), *args[1:])

    return decoder.register_forward_pre_hook(hook)


def built_in_training_snr(model: nn.Module) -> float | None:
    """The training SNR of an `AwgnChannel` the model's decoder holds (CLLWCsiNet built with
    `train_snr_db`), or None when its decoder adds no training noise of its own."""
    decoder = getattr(model, "decoder", None)
    if not isinstance(decoder, nn.Module):
        return None
    for module in decoder.modules():
        if isinstance(module, AwgnChannel) and module.train_snr_db is not None:
            return module.train_snr_db
    return None


@contextmanager
def training_noise(model: nn.Module, snr_db: float | None) -> Iterator[nn.Module]:
    """Within the block, `model` adds AWGN at `snr_db` on the codeword in training mode only.

    `snr_db=None` adds nothing (a model built with its own training channel keeps it). A model
    whose own channel trains at `snr_db` keeps that channel; one whose channel trains at
    another SNR is an error; any other model gets `attach_training_noise` for the block,
    removed on exit (also when the block raises), so that a trained model carries no hook.
    """
    own = built_in_training_snr(model)
    if snr_db is None:
        yield model
        return
    if own is not None:
        if _check_snr(snr_db) != own:
            name = getattr(model, "model_name", type(model).__name__)
            raise CsiDeployError(
                f"{name} was built to train with codeword noise at {own} dB, "
                f"not at the {snr_db} dB asked for"
            )
        yield model
        return
    handle = attach_training_noise(model, snr_db)
    try:
        yield model
    finally:
        handle.remove()


class SnrPoint(NamedTuple):
    """One point of an SNR sweep: the channel SNR and the end-to-end NMSE."""

    snr_db: float
    nmse_db: float


def evaluate_with_snr(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    snrs: Sequence[float],
    convention: str = "linear",
    *,
    batch_size: int = 500,
    seed: int = 0,
) -> list[SnrPoint]:
    """NMSE of `model` on `x` (N, 2, 32, 32) with AWGN at each SNR on the codeword.

    The model runs in eval mode (a CLLWCsiNet adds no training noise), each SNR draws its
    noise from a generator seeded with `seed` so that the sweep is reproducible, and the
    NMSE uses `csideploy.metrics.nmse` with `convention`.
    """
    from csideploy.metrics import nmse

    if not snrs:
        raise CsiDeployError("no SNR given: pass at least one value in dB")
    if batch_size <= 0:
        raise CsiDeployError(f"batch_size must be positive, got {batch_size}")
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float()
    if x.dim() != 4 or x.shape[0] == 0:
        raise ShapeError(f"csi: expected shape (N, 2, 32, 32) with N > 0, got {tuple(x.shape)}")
    was_training = model.training
    model.eval()
    points = []
    try:
        for snr in snrs:
            generator = torch.Generator().manual_seed(seed)
            outputs = []
            with torch.no_grad(), codeword_noise(model, snr, generator=generator):
                for start in range(0, x.shape[0], batch_size):
                    outputs.append(model(x[start : start + batch_size]))
            x_hat = torch.cat(outputs)
            value = nmse(x.cpu().numpy(), x_hat.cpu().numpy(), convention=convention)
            points.append(SnrPoint(float(snr), float(value)))
    finally:
        model.train(was_training)
    return points
