"""Resumable training state: what `fit` writes after every epoch and reads back on resume.

The state (weights, optimizer, step, epoch, RNG, history and the best weights so far) uses
only tensors and plain containers, so it loads with `torch.load(weights_only=True)`. It is
written atomically with the checkpoint writer, by one process only (rank 0 of a distributed
run); every process of a resumed run reads the same file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from csideploy.errors import CheckpointError, DivergedError
from csideploy.models.checkpoint import write_atomic
from csideploy.models.registry import CsiAutoencoder
from csideploy.train.config import TrainConfig, TrainResult

RESUME_FORMAT = "csideploy-train-state"
RESUME_VERSION = 1


def resume_path(out_path: str | os.PathLike[str]) -> Path:
    """Where `train` keeps the resumable state for `out_path`."""
    out = Path(out_path)
    return out.with_name(out.name + ".resume")


@dataclass
class RunState:
    """Mutable bookkeeping of a run; what the resume file stores besides the optimizer."""

    epoch: int = 0
    step: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    val_nmse: list[float] = field(default_factory=list)
    best_val_nmse_db: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def record(self, epoch: int, loss: float, val_db: float, model: nn.Module) -> None:
        if not (math.isfinite(loss) and math.isfinite(val_db)):
            raise DivergedError(
                f"training diverged at epoch {epoch}: mean loss {loss:.4g}, validation NMSE "
                f"{val_db:.4g} dB (is the learning rate too high?); no checkpoint written"
            )
        self.epoch = epoch
        self.losses.append(loss)
        self.val_nmse.append(val_db)
        if val_db < self.best_val_nmse_db or self.best_state is None:
            self.best_val_nmse_db = val_db
            self.best_epoch = epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def best_result(self, model: nn.Module, device: torch.device, **extra: Any) -> TrainResult:
        """Load the best recorded weights into `model`, move it to `device` in eval mode, and
        report the run; `extra` fills TrainResult's optional fields."""
        assert self.best_state is not None  # every recorded epoch keeps one
        model.load_state_dict(self.best_state)
        model.to(device).eval()
        return TrainResult(
            model=model,
            epochs_run=self.epoch,
            seconds=self.seconds,
            loss_history=tuple(self.losses),
            val_nmse_history=tuple(self.val_nmse),
            final_val_nmse_db=self.val_nmse[-1],
            best_val_nmse_db=self.best_val_nmse_db,
            best_epoch=self.best_epoch,
            **extra,
        )


def save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    run: RunState,
    config: TrainConfig,
) -> None:
    """Write the resume state atomically (the checkpoint writer: temporary sibling, then rename)."""
    state = {
        "format": RESUME_FORMAT,
        "version": RESUME_VERSION,
        "model": getattr(model, "model_name", type(model).__name__),
        "cr": int(getattr(model, "cr", 0)),
        "config": config.as_dict(),
        "epoch": run.epoch,
        "step": run.step,
        "seconds": run.seconds,
        "losses": list(run.losses),
        "val_nmse": list(run.val_nmse),
        "best_val_nmse_db": run.best_val_nmse_db,
        "best_epoch": run.best_epoch,
        "best_state": run.best_state,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"shuffle": generator.get_state(), "torch": torch.get_rng_state()},
    }
    write_atomic(path, lambda fh: torch.save(state, fh))


def load_state(
    path: Path,
    model: CsiAutoencoder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> RunState:
    """Restore weights, optimizer, RNG and history from a resume file written by `fit`."""
    if not path.is_file():
        raise CheckpointError(f"cannot resume: no training state at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"cannot read training state {path}: {error}") from error
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(f"{path} is not a csideploy training state")
    if state.get("version") != RESUME_VERSION:
        raise CheckpointError(f"{path}: unsupported training state version {state.get('version')}")
    expected = (getattr(model, "model_name", type(model).__name__), int(getattr(model, "cr", 0)))
    if (state["model"], state["cr"]) != expected:
        raise CheckpointError(
            f"{path} holds a run of {state['model']} CR 1/{state['cr']}, "
            f"not {expected[0]} CR 1/{expected[1]}"
        )
    model.load_state_dict(state["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"]["shuffle"])
    torch.set_rng_state(state["rng"]["torch"])
    return RunState(
        epoch=int(state["epoch"]),
        step=int(state["step"]),
        seconds=float(state["seconds"]),
        losses=[float(v) for v in state["losses"]],
        val_nmse=[float(v) for v in state["val_nmse"]],
        best_val_nmse_db=float(state["best_val_nmse_db"]),
        best_epoch=int(state["best_epoch"]),
        best_state=state["best_state"],
    )
