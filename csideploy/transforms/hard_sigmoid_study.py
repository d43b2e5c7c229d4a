"""The hard-sigmoid study: NMSE of a model with sigmoid, with hard-sigmoid, and after a short
fine-tune, so that `export --hard-sigmoid` says what the substitution costs."""


from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.errors import CsiDeployError, ShapeError
from csideploy.transforms.hard_sigmoid import Scope, replace_sigmoid


@dataclass(frozen=True)
class HardSigmoidResult:
    """NMSE of the model with sigmoid, with hard-sigmoid, and after fine-tuning (dB)."""

    model_name: str
    scope: str
    replaced: tuple[str, ...]
    convention: str
    n_eval: int
    nmse_before_db: float
    nmse_after_db: float
    nmse_finetuned_db: float | None = None
    finetune_epochs: int = 0
    finetune_samples: int = 0
    finetune_seconds: float | None = None
    model: nn.Module | None = field(default=None, compare=False, repr=False)
    """The substituted model, fine-tuned when `finetune_epochs` > 0 (eval mode)."""

    @property
    def nothing_to_replace(self) -> bool:
        return not self.replaced

    @property
    def degradation_db(self) -> float:
        """NMSE change caused by the substitution alone (positive = worse)."""
        return self.nmse_after_db - self.nmse_before_db

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "scope": self.scope,
            "replaced": list(self.replaced),
            "nothing_to_replace": self.nothing_to_replace,
            "convention": self.convention,
            "n_eval": self.n_eval,
            "nmse_before_db": self.nmse_before_db,
            "nmse_after_db": self.nmse_after_db,
            "nmse_finetuned_db": self.nmse_finetuned_db,
            "finetune_epochs": self.finetune_epochs,
            "finetune_samples": self.finetune_samples,
            "finetune_seconds": self.finetune_seconds,
        }


def model_nmse_db(
    model: nn.Module,
    x: torch.Tensor | np.ndarray,
    *,
    convention: str = "linear",
    batch_size: int = 500,
) -> float:
    """End-to-end NMSE (dB) of `model` on `x` (N, 2, 32, 32), in eval mode, batched."""
    from csideploy.metrics import nmse

    x = _as_csi(x, "eval_x")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            x_hat = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)
    value = float(nmse(x.cpu().numpy(), x_hat.cpu().numpy(), convention=convention))
    if math.isnan(value):
        raise CsiDeployError("NMSE is NaN: the evaluation data holds NaN or an all-zero sample")
    return value


def _as_csi(x: Any, what: str) -> torch.Tensor:
    """`x` (tensor or array) as a float32 tensor, checked to be (N, 2, 32, 32) with N > 0."""
    try:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    except (TypeError, ValueError, RuntimeError) as exc:
        kind = type(x).__name__
        raise ShapeError(f"{what}: expected a (N, 2, 32, 32) array, got {kind}") from exc
    if t.dim() != 4 or tuple(t.shape[1:]) != (2, 32, 32):
        raise ShapeError(f"{what}: expected shape (N, 2, 32, 32), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ShapeError(f"{what}: no samples")
    return t.to(torch.float32)


def hard_sigmoid_study(
    model: nn.Module,
    eval_x: torch.Tensor | np.ndarray,
    *,
    train_x: torch.Tensor | np.ndarray | None = None,
    val_x: torch.Tensor | np.ndarray | None = None,
    finetune_epochs: int = 0,
    lr: float = 1e-4,
    scope: Scope | str = "encoder",
    convention: str = "linear",
    batch_size: int = 200,
    seed: int = 0,
) -> HardSigmoidResult:
    """Substitute hard-sigmoid (`replace_sigmoid`) and measure what it costs in NMSE.

    `eval_x` (N, 2, 32, 32) gives the NMSE before and after substitution. With
    `finetune_epochs` > 0 the substituted model is fine-tuned end to end on `train_x` with the
    papers' recipe at a small constant learning rate `lr` (Adam, MSE, `batch_size`), using
    `csideploy.train.finetune`, which keeps the epoch with the best NMSE on `val_x` (default:
    the last tenth of `train_x`, held out); the result is evaluated again on `eval_x`.
    `finetune_seconds` is the fine-tune's wall time. The input model is not modified.
    """
    eval_x = _as_csi(eval_x, "eval_x")
    if finetune_epochs < 0:
        raise CsiDeployError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    if finetune_epochs and train_x is None:
        raise CsiDeployError("fine-tuning needs training data: pass train_x")
    before = model_nmse_db(model, eval_x, convention=convention)
    report = replace_sigmoid(model, scope=scope)
    new_model = report.model
    after = (
        before
        if report.nothing_to_replace
        else model_nmse_db(new_model, eval_x, convention=convention)
    )
    finetuned = seconds = None
    samples = 0
    if finetune_epochs:
        train_x = _as_csi(train_x, "train_x")
        if val_x is not None:
            val_x = _as_csi(val_x, "val_x")
        start = time.perf_counter()
        new_model = _finetune(
            new_model,
            train_x,
            val_x,
            epochs=finetune_epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
        )
        seconds = time.perf_counter() - start
        samples = int(train_x.shape[0])
        finetuned = model_nmse_db(new_model, eval_x, convention=convention)
    new_model.eval()
    return HardSigmoidResult(
        model_name=report.model_name,
        scope=report.scope,
        replaced=tuple(str(r) for r in report.replaced),
        convention=convention,
        n_eval=int(eval_x.shape[0]),
        nmse_before_db=before,
        nmse_after_db=after,
        nmse_finetuned_db=finetuned,
        finetune_epochs=finetune_epochs,
        finetune_samples=samples,
        finetune_seconds=seconds,
        model=new_model,
    )


def _finetune(
    model: nn.Module,
    train_x: torch.Tensor,
    val_x: torch.Tensor | None,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> nn.Module:
    """`csideploy.train.finetune`: constant `lr`, Adam, MSE; keeps the best validation epoch.

    Without `val_x` the last tenth of `train_x` is held out for that choice.
    """
    from csideploy.train import finetune

    if val_x is None:
        held = max(1, len(train_x) // 10)
        if len(train_x) <= held:
            raise CsiDeployError("fine-tuning needs at least 2 training samples or a val_x")
        train_x, val_x = train_x[:-held], train_x[-held:]
    result = finetune(
        model,
        train_x,
        val_x,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        device="cpu",
    )
    return result.model.eval()
