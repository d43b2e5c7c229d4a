"""The papers' training recipe, for making checkpoints and fine-tuning transformed models.

Recipe (CRNet / CLNet): Adam with betas (0.9, 0.999), MSE between the reconstruction and the
input, batch 200, Xavier-uniform conv / linear weights with BatchNorm at weight 1 / bias 0, and
a learning rate warmed up linearly from 0 to 2e-3 then cosine-annealed to 5e-5, stepped every
iteration. `fit` is the reusable core (an in-memory model and arrays); `train` builds the
model, loads the data and writes a project checkpoint.

Training is resumable: after every epoch the full state (weights, optimizer, step, epoch, RNG,
history and the best weights so far) is written next to the output as `<out>.resume`, using
only tensors and plain containers so that it loads with `torch.load(weights_only=True)`.

Options of a run beyond the recipe: build options of the model (LORA's `quantizer` and `bits`;
checked against what the model's builder takes and stored in the checkpoint so that it
reloads the same model) and `TrainConfig.train_snr_db`, AWGN on the codeword in training mode
only (CLLWCsiNet's own channel, a build option; a decoder hook for the other models, removed
after the run). DualNet-MP trains with its two-stage recipe (`train_dualnet_mp`) on paired
UL/DL files (`HT` and `HT_UL`), and reports validation NMSE with the UL side information; it
keeps no resumable state.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import math
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.errors import CheckpointError, CsiDeployError, DataError, DivergedError, ShapeError
from csideploy.models.noise import training_noise
from csideploy.models.registry import CSI_SHAPE, CsiAutoencoder, build, get_entry, list_models
from csideploy.train_init import OUTPUT_PATH_BN_WEIGHT, init_weights

SCHEDULERS = ("cosine", "const")
DEVICES = ("auto", "cpu", "cuda")
RESUME_FORMAT = "csideploy-train-state"
RESUME_VERSION = 1
NMSE_CONVENTION = "linear"
_WARMUP_MAX_FRACTION = 0.1
"""Warm-up never takes more than this fraction of the run (the papers use 30 of 1000+)."""
PAIRED_MODELS = ("dualnet-mp",)
"""Models trained by their own recipe on paired UL/DL data (`HT` and `HT_UL` in each file)."""
PAIRED_DATA_HINT = "make paired data with `csideploy data synth --paired -o DIR`"
_INIT_DESCRIPTION = f"xavier_uniform; decoder output-path BatchNorm weight {OUTPUT_PATH_BN_WEIGHT}"
_CLI_FLAGS = {"train_snr_db": "--train-snr"}
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


def resume_path(out_path: str | os.PathLike[str]) -> Path:
    """Where `train` keeps the resumable state for `out_path`."""
    out = Path(out_path)
    return out.with_name(out.name + ".resume")


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
    with _torch_threads(config.threads), training_noise(model, config.train_snr_db):
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
    device = resolve_device(config.device)
    home = next(model.parameters()).device
    model.to(device)
    train_t = train_t.to(device)
    val_t = val_t.to(device)

    steps_per_epoch = math.ceil(len(train_t) / config.batch_size)
    schedule = LrSchedule.from_config(config, steps_per_epoch)
    optimizer = torch.optim.Adam(model.parameters(), lr=schedule(0), betas=config.betas)
    generator = torch.Generator().manual_seed(config.seed)
    run = _RunState()
    if resume:
        if state_path is None:
            raise CheckpointError("resume requested but no state path was given")
        run = _load_state(Path(state_path), model, optimizer, generator)
    start_epoch = run.epoch
    started = time.perf_counter() - run.seconds

    for epoch in range(start_epoch, config.epochs):
        if _budget_spent(config, time.perf_counter() - started):
            break
        model.train()
        order = torch.randperm(len(train_t), generator=generator).to(device)
        bar = _progress_bar(steps_per_epoch, epoch, config.epochs, progress)
        total_loss = 0.0
        for i in range(steps_per_epoch):
            batch = train_t[order[i * config.batch_size : (i + 1) * config.batch_size]]
            lr = schedule(run.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(model(batch), batch)
            loss.backward()
            optimizer.step()
            run.step += 1
            total_loss += loss.item() * len(batch)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3e}", lr=f"{lr:.2e}")
        epoch_loss = total_loss / len(train_t)
        val_db = _val_nmse_db(model, val_t, config.eval_batch_size)
        run.record(epoch + 1, epoch_loss, val_db, model)
        run.seconds = time.perf_counter() - started
        if bar is not None:
            bar.set_postfix(loss=f"{epoch_loss:.3e}", val_nmse=f"{val_db:.2f} dB")
            bar.close()
        if state_path is not None:
            _save_state(Path(state_path), model, optimizer, generator, run, config)

    if run.best_state is None:
        raise CsiDeployError(
            f"the time budget ({config.max_minutes} min) was spent before the first epoch; "
            "nothing to save"
        )
    return run.best_result(model, home, resumed_from_epoch=start_epoch)


def _budget_spent(config: TrainConfig, seconds: float) -> bool:
    return config.max_minutes is not None and seconds >= 60 * config.max_minutes


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


def train(
    model_name: str,
    cr: int,
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    config: TrainConfig,
    *,
    out_path: str | os.PathLike[str],
    resume: bool = False,
    progress: bool = True,
    init_from: CsiAutoencoder | None = None,
    scenario: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train `model_name` at CR 1/`cr` and write the best-validation model to `out_path`.

    `data` is a directory holding `DATA_Htrain*.mat` and `DATA_Hval*.mat` (`scenario`
    picks `in` or `out` when both are present) or the two files `(train, val)`. A fresh model
    gets `init_weights`; `init_from` starts from a copy of an existing model instead.
    `options` are build options of the model (e.g. LORA's `quantizer`, `bits`), checked
    against its builder and kept in the checkpoint. DualNet-MP (`PAIRED_MODELS`) runs its
    two-stage recipe on paired files. The project checkpoint's metadata records the config,
    data, validation NMSE and timing.
    """
    from csideploy.models.checkpoint import save_checkpoint

    out = Path(out_path)
    if out.is_dir():
        raise DataError(f"output path {out} is a directory; give a checkpoint file name")
    if model_name in PAIRED_MODELS:
        _check_paired_run(model_name, config, resume)
    train_file, val_file = _resolve_train_val(data, scenario)
    if model_name in PAIRED_MODELS:
        return _train_paired(
            model_name,
            cr,
            (train_file, val_file),
            config,
            out=out,
            progress=progress,
            init_from=init_from,
            options=options,
        )
    train_x = _load(train_file)
    val_x = _load(val_file)
    model = _initial_model(model_name, cr, config, options, init_from)
    result = fit(
        model,
        train_x,
        val_x,
        config,
        progress=progress,
        state_path=resume_path(out),
        resume=resume,
    )
    data_info = _data_info(train_file, len(train_x), val_file, len(val_x))
    metadata = _metadata(result, config, data_info, init_from)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, result.model, metadata=metadata)
    return _with_checkpoint(result, out)


def model_options(
    model_name: str, options: Mapping[str, Any] | None = None, train_snr_db: float | None = None
) -> dict[str, Any]:
    """Build options for a training run of `model_name`, checked against its builder.

    An option the builder does not take is an error naming the models that take it.
    `train_snr_db` becomes a build option for a model with its own training channel
    (CLLWCsiNet); other models get the noise from `fit` instead, and a model trained by
    another recipe (DualNet-MP) cannot take it.
    """
    chosen = {k: v for k, v in (options or {}).items() if v is not None}
    accepted = _builder_options(model_name)
    for key in chosen:
        if key not in accepted:
            takers = [n for n in list_models() if key in _builder_options(n)]
            raise CsiDeployError(
                f"model {model_name!r} takes no option {key!r} ({_flag(key)}); "
                f"models that take it: {', '.join(takers) or 'none'}"
            )
    if "bits" in chosen and chosen.get("quantizer") is None and "quantizer" in accepted:
        raise CsiDeployError("--bits sets the codeword quantizer's width; give --quantizer too")
    if train_snr_db is not None:
        if model_name in PAIRED_MODELS:
            takers = [n for n in list_models() if n not in PAIRED_MODELS]
            raise CsiDeployError(
                f"--train-snr is not supported for {model_name}: its two-stage recipe decodes "
                f"the quantized levels and sign bits branch by branch; models that take it: "
                f"{', '.join(takers)}"
            )
        if "train_snr_db" in accepted:
            given = chosen.get("train_snr_db", train_snr_db)
            if given != train_snr_db:
                raise CsiDeployError(
                    f"train_snr_db option {given} dB conflicts with --train-snr {train_snr_db}"
                )
            chosen["train_snr_db"] = train_snr_db
    return chosen


def build_for_training(name: str, cr: int, options: Mapping[str, Any]) -> CsiAutoencoder:
    """`build(name, cr, **options)`, with options errors made clear and the options recorded.

    The model's `build_options` (what `save_checkpoint` stores and checkpoint loading passes
    back to `build`) gets every given option, so that the checkpoint reloads the same model
    also when the builder does not record them itself.
    """
    try:
        model = build(name, cr, **options)
    except CsiDeployError:
        raise
    except (TypeError, ValueError) as error:
        raise CsiDeployError(
            f"cannot build {name} CR 1/{cr} with {dict(options)}: {error}"
        ) from None
    recorded = {**options, **(getattr(model, "build_options", None) or {})}
    if recorded:
        model.build_options = recorded
    return model


# -- the two-stage recipe on paired data ---------------------------------------------------


def _check_paired_run(model_name: str, config: TrainConfig, resume: bool) -> None:
    """Refuse what the two-stage recipe cannot do, before any data is read."""
    if resume:
        raise CheckpointError(
            f"--resume is not supported for {model_name}: its two-stage recipe keeps no "
            "resumable state; train again without --resume"
        )
    model_options(model_name, None, config.train_snr_db)


def _train_paired(
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
    model = _initial_model(model_name, cr, config, options, init_from)
    with _torch_threads(config.threads):
        result, stages = _run_two_stages(
            model, (train_dl, train_ul), (val_dl, val_ul), config, progress
        )
    data_info = {
        **_data_info(files[0], len(train_dl), files[1], len(val_dl)),
        "paired": "HT (DL) and HT_UL (UL) per file",
    }
    metadata = _metadata(result, config, data_info, init_from)
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
    return _with_checkpoint(result, out)


def _run_two_stages(
    model: CsiAutoencoder,
    train_pair: tuple[np.ndarray, np.ndarray],
    val_pair: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    progress: bool,
) -> tuple[TrainResult, Any]:
    """Train in place; the result's histories are those of stage 2 (the end-to-end model)."""
    from csideploy.models.zoo.dualnet_mp import train_dualnet_mp

    device = resolve_device(config.device)
    home = next(model.parameters()).device
    model.to(device)
    val_dl, val_ul = (torch.from_numpy(a).to(device) for a in val_pair)
    run = _RunState()
    bar = _progress_bar(2 * config.epochs, -1, 0, progress, desc=f"{model.model_name} 2 stages")
    started = time.perf_counter()

    def on_epoch(stage: int, epoch: int, loss: float) -> None:
        postfix = {"stage": stage, "loss": f"{loss:.3e}"}
        if stage == 2:
            val_db = _val_nmse_db(model, val_dl, config.eval_batch_size, side=val_ul)
            run.record(epoch, loss, val_db, model)
            postfix["val_nmse"] = f"{val_db:.2f} dB"
        if bar is not None:
            bar.update(1)
            bar.set_postfix(**postfix)

    try:
        stages = train_dualnet_mp(
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


# -- internals ----------------------------------------------------------------------------


@dataclass
class _RunState:
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


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
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
def _val_nmse_db(
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


def _progress_bar(
    total: int, epoch: int, epochs: int, enabled: bool, *, desc: str | None = None
) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    label = desc or f"epoch {epoch + 1}/{epochs}"
    unit = "batch" if desc is None else "epoch"
    return tqdm(total=total, desc=label, unit=unit, leave=True)


def _initial_model(
    model_name: str,
    cr: int,
    config: TrainConfig,
    options: Mapping[str, Any] | None,
    init_from: CsiAutoencoder | None,
) -> CsiAutoencoder:
    """A copy of `init_from`, or a fresh model with the papers' init, seeded by the config."""
    if init_from is not None:
        if (init_from.model_name, init_from.cr) != (model_name, cr):
            raise CheckpointError(
                f"init_from is {init_from.model_name} CR 1/{init_from.cr}, "
                f"but training {model_name} CR 1/{cr} was requested"
            )
        if options:
            raise CheckpointError("init_from keeps its own build options; give no options")
        return copy.deepcopy(init_from)
    chosen = model_options(model_name, options, config.train_snr_db)
    torch.manual_seed(config.seed)
    return init_weights(build_for_training(model_name, cr, chosen))


def _builder_options(model_name: str) -> frozenset[str]:
    """Keyword options the registered builder of `model_name` takes besides the CR."""
    parameters = list(inspect.signature(get_entry(model_name).builder).parameters.values())
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in parameters[1:] if p.kind in kinds)


def _flag(option: str) -> str:
    return _CLI_FLAGS.get(option, "--" + option.replace("_", "-"))


def _data_info(train_file: Path, n_train: int, val_file: Path, n_val: int) -> dict[str, Any]:
    return {
        "train_file": str(train_file),
        "train_samples": n_train,
        "val_file": str(val_file),
        "val_samples": n_val,
        **_dataset_description(train_file.parent),
    }


def _metadata(
    result: TrainResult,
    config: TrainConfig,
    data_info: Mapping[str, Any],
    init_from: CsiAutoencoder | None,
) -> dict[str, Any]:
    """What a trained checkpoint records about its run."""
    return {
        "trained_by": "csideploy train",
        "training": config.as_dict(),
        "build_options": dict(getattr(result.model, "build_options", None) or {}),
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "data": dict(data_info),
        "val_nmse_db": result.best_val_nmse_db,
        "final_val_nmse_db": result.final_val_nmse_db,
        "nmse_convention": NMSE_CONVENTION,
        "seconds": round(result.seconds, 2),
        "torch_version": torch.__version__,
        "device": str(resolve_device(config.device)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "init": "init_from" if init_from is not None else _INIT_DESCRIPTION,
    }


def _save_state(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    run: _RunState,
    config: TrainConfig,
) -> None:
    """Write the resume state atomically (temporary sibling, then rename)."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_state(
    path: Path,
    model: CsiAutoencoder,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> _RunState:
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
    return _RunState(
        epoch=int(state["epoch"]),
        step=int(state["step"]),
        seconds=float(state["seconds"]),
        losses=[float(v) for v in state["losses"]],
        val_nmse=[float(v) for v in state["val_nmse"]],
        best_val_nmse_db=float(state["best_val_nmse_db"]),
        best_epoch=int(state["best_epoch"]),
        best_state=state["best_state"],
    )


def _resolve_train_val(
    data: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], scenario: str | None
) -> tuple[Path, Path]:
    """(train file, validation file) from a dataset directory or an explicit pair."""
    if isinstance(data, (str, os.PathLike)):
        from csideploy.calibration.layout import resolve_split

        root = Path(data)
        if not root.is_dir():
            raise DataError(f"data directory not found: {root}")
        return resolve_split(root, "train", scenario), resolve_split(root, "val", scenario)
    files = [Path(p) for p in data]
    if len(files) != 2:
        raise DataError(f"give a data directory or exactly two files (train, val), got {files}")
    for f in files:
        if not f.is_file():
            raise DataError(f"data file not found: {f}")
    return files[0], files[1]


def _dataset_description(root: Path) -> dict[str, Any]:
    """What a built-in generator's manifest (single or paired) says about a data set (empty
    for other data)."""
    for name in ("synthetic_dataset.json", "paired_dataset.json"):
        manifest = root / name
        if not manifest.is_file():
            continue
        try:
            info = json.loads(manifest.read_text())
        except (OSError, ValueError):
            return {}
        keys = ("generator", "note", "scenario", "n", "seed", "counts")
        return {"synthetic": {k: info[k] for k in keys if k in info}}
    return {}


def _load(path: Path) -> np.ndarray:
    from csideploy.calibration.io import load_csi

    return load_csi(path)


def _with_checkpoint(result: TrainResult, path: Path) -> TrainResult:
    from dataclasses import replace

    return replace(result, checkpoint=path)
