"""Reconstruction quality of a model on CSI data: NMSE under a named convention, and rho.

Papers report NMSE three ways (see `csideploy.metrics`); every result here carries the
convention's name and description so that a number is never read under the wrong one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csideploy.errors import DataError, ShapeError
from csideploy.models.registry import CSI_SHAPE, CsiAutoencoder


@dataclass(frozen=True)
class EvalResult:
    """NMSE (dB) of a model's reconstruction, under `convention`, over `n_samples`."""

    model: str
    cr: int
    nmse_db: float
    convention: str
    convention_description: str
    n_samples: int
    rho: float | None = None
    data: str | None = None
    checkpoint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "cr": self.cr,
            "nmse_db": self.nmse_db,
            "convention": self.convention,
            "convention_description": self.convention_description,
            "n_samples": self.n_samples,
            "rho": self.rho,
            "data": self.data,
            "checkpoint": self.checkpoint,
        }

    def summary(self) -> str:
        """One line a person can quote: the model, the NMSE and the convention behind it."""
        line = (
            f"{self.model} CR 1/{self.cr}: NMSE {self.nmse_db:.2f} dB "
            f"({self.convention}: {self.convention_description}) over {self.n_samples} samples"
        )
        if self.rho is not None:
            line += f", rho {self.rho:.4f}"
        return line


@torch.no_grad()
def reconstruct(
    model: CsiAutoencoder,
    x: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 1000,
    side: np.ndarray | None = None,
) -> np.ndarray:
    """The model's output for every sample of `x`, in eval mode, batch by batch, as float32.

    `side`: the decoder's side input row for row (DualNet-MP: the uplink CSI)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    s = None if side is None else torch.as_tensor(np.asarray(side, dtype=np.float32))
    if s is not None and s.shape != t.shape:
        raise ShapeError(f"side input: expected shape {tuple(t.shape)}, got {tuple(s.shape)}")
    if t.dim() != 4 or tuple(t.shape[1:]) != CSI_SHAPE:
        raise ShapeError(f"csi: expected shape (N, 2, 32, 32), got {tuple(t.shape)}")
    if len(t) == 0:
        raise DataError("csi: no samples to evaluate")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        parts = []
        for i in range(0, len(t), batch_size):
            inputs = [t[i : i + batch_size]] + ([] if s is None else [s[i : i + batch_size]])
            parts.append(model(*(v.to(device=device, dtype=torch.float32) for v in inputs)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(parts).numpy()


def evaluate(
    model: CsiAutoencoder,
    x: np.ndarray | torch.Tensor,
    *,
    convention: str = "linear",
    hf: np.ndarray | None = None,
    batch_size: int = 1000,
    side: np.ndarray | None = None,
) -> EvalResult:
    """NMSE (dB) of `model` on `x` under `convention`; rho too when `hf` (HF_all) is given;
    `side` is the decoder's side input (DualNet-MP's uplink CSI)."""
    from csideploy import metrics

    description = _describe(convention)
    x_np = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    _check_power(x_np)
    x_hat = reconstruct(model, x_np, batch_size=batch_size, side=side)
    nmse_db = float(metrics.nmse(x_np, x_hat, convention=convention))
    if not np.isfinite(nmse_db):
        bad = int(x_hat.size - np.count_nonzero(np.isfinite(x_hat)))
        raise DataError(
            f"NMSE is {nmse_db} dB: the model's reconstruction holds {bad} NaN or inf values "
            "(weights that overflow?); no figure to report"
        )
    rho = None if hf is None else float(metrics.rho(x_hat, hf))
    return EvalResult(
        model=getattr(model, "model_name", type(model).__name__),
        cr=int(getattr(model, "cr", 0)),
        nmse_db=nmse_db,
        convention=convention,
        convention_description=description,
        n_samples=len(x_np),
        rho=rho,
    )


def evaluate_checkpoint(
    model_name: str,
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    convention: str = "linear",
    cr: int | None = None,
    scenario: str | None = None,
    limit: int | None = None,
    hf: str | os.PathLike[str] | None = None,
    batch_size: int = 1000,
) -> EvalResult:
    """Load `checkpoint` into `model_name` and evaluate it on a CSI file or dataset directory.

    A directory means its test split (`DATA_Htest*.mat`; `scenario` picks `in` or `out` when
    both are present). `cr` may be left out when the checkpoint reveals it. rho is computed
    from `hf` (an `HF_all` file), or from the `DATA_HtestF*_all.mat` beside the test file.
    """
    from csideploy.calibration.io import load_csi, load_csi_freq
    from csideploy.calibration.layout import resolve_data
    from csideploy.models.checkpoint import load_checkpoint
    from csideploy.models.registry import get_entry

    _describe(convention)
    _check_limit(limit)
    data_path = resolve_data(data, split="test", scenario=scenario)
    loaded = load_checkpoint(checkpoint, model=model_name, cr=cr)
    side = None
    if get_entry(loaded.name).side_input is not None:
        x, side = _paired(data_path, limit)
    else:
        x = load_csi(data_path, limit=limit)
    hf_path = Path(hf) if hf is not None else _sibling_hf(data_path)
    hf_data = None if hf_path is None else load_csi_freq(hf_path, limit=limit)
    if hf_data is not None and len(hf_data) != len(x):
        raise DataError(
            f"{hf_path}: holds {len(hf_data)} HF_all samples but {data_path} holds {len(x)}"
        )
    result = evaluate(
        loaded.model, x, convention=convention, hf=hf_data, batch_size=batch_size, side=side
    )
    from dataclasses import replace

    return replace(result, data=str(data_path), checkpoint=str(checkpoint))


def _check_power(x: np.ndarray) -> None:
    """Refuse samples with no channel at all (every value 0.5): their NMSE divides by zero."""
    if x.ndim != 4 or not len(x):
        return  # the shape error comes from `reconstruct`
    from csideploy.metrics import ZERO_OFFSET

    silent = ~np.any(x.reshape(len(x), -1) != ZERO_OFFSET, axis=1)
    if silent.any():
        raise DataError(
            f"{int(silent.sum())} of {len(x)} CSI samples are all {ZERO_OFFSET} (no channel; "
            f"first at index {int(np.argmax(silent))}): NMSE is undefined for them"
        )


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a positive number of samples, got {limit}")


def _paired(path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(DL, UL) of a paired file, or an error saying the model needs one."""
    from csideploy.calibration.paired import UL_VARIABLE, load_paired

    try:
        return load_paired(path, limit=limit)
    except DataError as error:
        raise DataError(
            f"this model's decoder takes the uplink CSI: {path} must hold {UL_VARIABLE} "
            f"beside HT (make paired data with `csideploy data synth --paired`): {error}"
        ) from None


def _describe(convention: str) -> str:
    """The convention's description, or a ValueError listing the known ones."""
    from csideploy.metrics import NMSE_CONVENTIONS

    try:
        return str(NMSE_CONVENTIONS[convention])
    except KeyError:
        known = ", ".join(NMSE_CONVENTIONS)
        raise ValueError(f"unknown NMSE convention {convention!r}; known: {known}") from None


def _sibling_hf(test_file: Path) -> Path | None:
    """`DATA_HtestF{in,out}_all.mat` beside a `DATA_Htest{in,out}` file, if present."""
    from csideploy.calibration.layout import split_filename

    for scenario in ("indoor", "outdoor"):
        if test_file.name == split_filename("test", scenario, test_file.suffix):
            candidate = test_file.with_name(split_filename("testF", scenario))
            return candidate if candidate.is_file() else None
    return None


def snr_sweep_checkpoint(
    model_name: str,
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    snrs: list[float],
    *,
    convention: str = "linear",
    cr: int | None = None,
    scenario: str | None = None,
    limit: int | None = None,
) -> list[dict[str, float]]:
    """NMSE with AWGN on the codeword at each SNR (dB, per-sample codeword power): the data
    for a noise-robustness figure. Noise is added between encoder and decoder, seeded."""
    from csideploy.calibration.io import load_csi
    from csideploy.calibration.layout import resolve_data
    from csideploy.models.checkpoint import load_checkpoint
    from csideploy.models.noise import evaluate_with_snr

    _describe(convention)
    _check_limit(limit)
    data_path = resolve_data(data, split="test", scenario=scenario)
    loaded = load_checkpoint(checkpoint, model=model_name, cr=cr)
    x = load_csi(data_path, limit=limit)
    points = evaluate_with_snr(loaded.model, x, snrs, convention=convention)
    return [{"snr_db": float(p.snr_db), "nmse_db": float(p.nmse_db)} for p in points]
