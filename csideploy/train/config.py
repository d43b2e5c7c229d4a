"""What a training run is given and what it returns: the recipe's hyper-parameters, the
learning-rate schedule and the result, plus the constants the rest of the package shares."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from csideploy.errors import CsiDeployError
from csideploy.models.registry import CsiAutoencoder, get_entry
from csideploy.train.init import OUTPUT_PATH_BN_WEIGHT

SCHEDULERS = ("cosine", "const")
DEVICES = ("auto", "cpu", "cuda")
NMSE_CONVENTION = "linear"
_WARMUP_MAX_FRACTION = 0.1
"""Warm-up never takes more than this fraction of the run (the papers use 30 of 1000+)."""
PAIRED_DATA_HINT = "make paired data with `csideploy data synth --paired -o DIR`"
INIT_DESCRIPTION = f"xavier_uniform; decoder output-path BatchNorm weight {OUTPUT_PATH_BN_WEIGHT}"


def is_paired(model_name: str) -> bool:
    """Whether the model trains by its own recipe on paired UL/DL data (its registry entry)."""
    return get_entry(model_name).paired_recipe is not None


CLI_FLAGS = {"train_snr_db": "--train-snr"}
"""Option names whose command-line flag is not `--` + the name with dashes."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; defaults are the CRNet / CLNet recipe."""

    epochs: int = 1000
    batch_size: int = 200
    lr: float = 2e-3
    """Peak learning rate (reached after warm-up; the constant rate for `const`)."""
    lr_min: float = 5e-5
    """Final learning rate of the cosine annealing."""
    scheduler: str = "cosine"
    warmup_epochs: int = 30
    """Requested linear warm-up; clamped to 10% of `epochs` for short runs."""
    seed: int = 0
    device: str = "auto"
    betas: tuple[float, float] = (0.9, 0.999)
    eval_batch_size: int = 1000
    threads: int | None = None
    """CPU threads for torch during the run (None keeps torch's setting). One thread avoids
    the stalls of multi-threaded kernels on a CPU shared with other busy processes."""
    train_snr_db: float | None = None
    """AWGN on the codeword at this SNR (dB, per-sample power) in training mode only; None
    adds none. Evaluation, export and inference never see it."""
    max_minutes: float | None = None
    """Time budget of the whole run (resumes included): no epoch starts once it is spent, and
    the best weights so far are kept. None runs every epoch. The schedule still spans
    `epochs`, so a budget-stopped run ends before its learning rate has annealed."""

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs <= 0:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.eval_batch_size, int) or self.eval_batch_size <= 0:
            raise ValueError(f"eval_batch_size must be positive, got {self.eval_batch_size!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not (0 <= self.lr_min <= self.lr):
            raise ValueError(f"lr_min must lie in [0, lr={self.lr}], got {self.lr_min!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if not isinstance(self.warmup_epochs, int) or self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {self.threads!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.max_minutes is not None and not (
            isinstance(self.max_minutes, (int, float)) and 0 <= self.max_minutes < math.inf
        ):
            raise ValueError(
                f"max_minutes must be a number of minutes >= 0, got {self.max_minutes!r}"
            )
        if self.train_snr_db is not None and not (
            isinstance(self.train_snr_db, (int, float)) and math.isfinite(self.train_snr_db)
        ):
            raise ValueError(
                f"train_snr_db must be a finite number of dB, got {self.train_snr_db!r}"
            )

    @property
    def effective_warmup_epochs(self) -> int:
        """Warm-up actually used: at most 10% of the run, so short runs spend it annealing."""
        if self.scheduler != "cosine":
            return 0
        return min(self.warmup_epochs, int(self.epochs * _WARMUP_MAX_FRACTION))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["betas"] = list(self.betas)
        out["effective_warmup_epochs"] = self.effective_warmup_epochs
        return out


@dataclass(frozen=True)
class LrSchedule:
    """Learning rate per iteration: linear warm-up from 0, then cosine to `lr_min`.

    `const` keeps `lr_max` throughout. Steps count optimizer updates from 0.
    """

    kind: str
    lr_max: float
    lr_min: float
    total_steps: int
    warmup_steps: int = 0

    @classmethod
    def from_config(cls, config: TrainConfig, steps_per_epoch: int) -> LrSchedule:
        return cls(
            kind=config.scheduler,
            lr_max=config.lr,
            lr_min=config.lr_min,
            total_steps=config.epochs * steps_per_epoch,
            warmup_steps=config.effective_warmup_epochs * steps_per_epoch,
        )

    def __call__(self, step: int) -> float:
        if self.kind == "const":
            return self.lr_max
        if step < self.warmup_steps:
            return self.lr_max * step / self.warmup_steps
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.lr_min + (self.lr_max - self.lr_min) * (1 + math.cos(math.pi * progress)) / 2


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: the model holding the best validation weights, and its history."""

    model: CsiAutoencoder = field(repr=False)
    epochs_run: int
    """Epochs completed in total, counting those done before a resume."""
    seconds: float
    """Training wall time in total, counting time spent before a resume."""
    loss_history: tuple[float, ...]
    """Mean training MSE per epoch."""
    val_nmse_history: tuple[float, ...]
    """Validation NMSE (dB, `nmse_convention`) after each epoch."""
    final_val_nmse_db: float
    best_val_nmse_db: float
    best_epoch: int
    """1-based epoch whose weights the model (and checkpoint) hold."""
    nmse_convention: str = NMSE_CONVENTION
    checkpoint: Path | None = None
    resumed_from_epoch: int = 0
    stage_losses: Mapping[str, tuple[float, ...]] | None = None
    """Per-stage mean training losses of a multi-stage recipe (DualNet-MP), else None; the
    histories above then cover its last (end-to-end) stage."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the model)."""
        out = {
            "model": self.model.model_name,
            "cr": self.model.cr,
            "build_options": dict(getattr(self.model, "build_options", None) or {}),
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 2),
            "final_val_nmse_db": self.final_val_nmse_db,
            "best_val_nmse_db": self.best_val_nmse_db,
            "best_epoch": self.best_epoch,
            "nmse_convention": self.nmse_convention,
            "loss_history": list(self.loss_history),
            "val_nmse_history": list(self.val_nmse_history),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "resumed_from_epoch": self.resumed_from_epoch,
        }
        if self.stage_losses is not None:
            out["stage_losses"] = {k: list(v) for k, v in self.stage_losses.items()}
        return out


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when available; asking for CUDA without it is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise CsiDeployError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(device)
