"""The papers' training recipe, for making checkpoints and fine-tuning transformed models.

Recipe (CRNet / CLNet): Adam with betas (0.9, 0.999), MSE between the reconstruction and the
input, batch 200, Xavier-uniform conv / linear weights with BatchNorm at weight 1 / bias 0, and
a learning rate warmed up linearly from 0 to 2e-3 then cosine-annealed to 5e-5, stepped every
iteration. `fit` is the reusable core (an in-memory model and arrays); `train` builds the
model, loads the data and writes a project checkpoint.

Training is resumable: after every epoch the full state (weights, optimizer, step, epoch, RNG,
history and the best weights so far) is written next to the output as `<out>.resume`, using
only tensors and plain containers so that it loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.errors import CheckpointError, CsiDeployError, DataError, ShapeError
from csideploy.models.registry import CSI_SHAPE, CsiAutoencoder, build

SCHEDULERS = ("cosine", "const")
DEVICES = ("auto", "cpu", "cuda")
RESUME_FORMAT = "csideploy-train-state"
RESUME_VERSION = 1
NMSE_CONVENTION = "linear"
_WARMUP_MAX_FRACTION = 0.1
"""Warm-up never takes more than this fraction of the run (the papers use 30 of 1000+)."""


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

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the model)."""
        return {
            "model": self.model.model_name,
            "cr": self.model.cr,
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


def init_weights(model: nn.Module) -> nn.Module:
    """The papers' initialisation: Xavier-uniform conv / linear weights, BN weight 1, bias 0.

    Biases of conv and linear layers keep PyTorch's default. Returns `model` for chaining.
    """
    conv_or_linear = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.Linear)
    for module in model.modules():
        if isinstance(module, conv_or_linear):
            nn.init.xavier_uniform_(module.weight)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


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
    """
    with _torch_threads(config.threads):
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

    assert run.best_state is not None  # every completed epoch records one
    model.load_state_dict(run.best_state)
    model.to(home).eval()
    return TrainResult(
        model=model,
        epochs_run=run.epoch,
        seconds=run.seconds,
        loss_history=tuple(run.losses),
        val_nmse_history=tuple(run.val_nmse),
        final_val_nmse_db=run.val_nmse[-1],
        best_val_nmse_db=run.best_val_nmse_db,
        best_epoch=run.best_epoch,
        resumed_from_epoch=start_epoch,
    )


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
) -> TrainResult:
    """Train `model_name` at CR 1/`cr` and write the best-validation model to `out_path`.

    `data` is a directory holding `DATA_Htrain*.mat` and `DATA_Hval*.mat` (`scenario`
    picks `in` or `out` when both are present) or the two files `(train, val)`. A fresh model
    gets `init_weights`; `init_from` starts from a copy of an existing model instead.
    The project checkpoint's metadata records the config, data, validation NMSE and timing.
    """
    from csideploy.models.checkpoint import save_checkpoint

    out = Path(out_path)
    if out.is_dir():
        raise DataError(f"output path {out} is a directory; give a checkpoint file name")
    train_file, val_file = _resolve_train_val(data, scenario)
    train_x = _load(train_file)
    val_x = _load(val_file)

    if init_from is not None:
        if (init_from.model_name, init_from.cr) != (model_name, cr):
            raise CheckpointError(
                f"init_from is {init_from.model_name} CR 1/{init_from.cr}, "
                f"but training {model_name} CR 1/{cr} was requested"
            )
        model = copy.deepcopy(init_from)
    else:
        torch.manual_seed(config.seed)
        model = init_weights(build(model_name, cr))

    result = fit(
        model,
        train_x,
        val_x,
        config,
        progress=progress,
        state_path=resume_path(out),
        resume=resume,
    )
    metadata = {
        "trained_by": "csideploy train",
        "training": config.as_dict(),
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "data": {
            "train_file": str(train_file),
            "train_samples": len(train_x),
            "val_file": str(val_file),
            "val_samples": len(val_x),
            **_dataset_description(train_file.parent),
        },
        "val_nmse_db": result.best_val_nmse_db,
        "final_val_nmse_db": result.final_val_nmse_db,
        "nmse_convention": NMSE_CONVENTION,
        "seconds": round(result.seconds, 2),
        "torch_version": torch.__version__,
        "device": str(resolve_device(config.device)),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "init": "init_from" if init_from is not None else "xavier_uniform",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, result.model, metadata=metadata)
    return _with_checkpoint(result, out)


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
        self.epoch = epoch
        self.losses.append(loss)
        self.val_nmse.append(val_db)
        if val_db < self.best_val_nmse_db or self.best_state is None:
            self.best_val_nmse_db = val_db
            self.best_epoch = epoch
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


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
def _val_nmse_db(model: nn.Module, x: torch.Tensor, batch_size: int) -> float:
    """Validation NMSE in dB, linear mean over the whole set (the papers' definition)."""
    from csideploy.metrics import nmse

    model.eval()
    recon = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return float(nmse(x.cpu().numpy(), recon.cpu().numpy(), convention=NMSE_CONVENTION))


def _progress_bar(total: int, epoch: int, epochs: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=True)


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
        from csideploy.calibration.io import resolve_split

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
    """What the synthetic generator's manifest says about a data set (empty for other data)."""
    manifest = root / "synthetic_dataset.json"
    if not manifest.is_file():
        return {}
    try:
        info = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return {}
    keys = ("generator", "note", "scenario", "n", "seed", "counts")
    return {"synthetic": {k: info[k] for k in keys if k in info}}


def _load(path: Path) -> np.ndarray:
    from csideploy.calibration.io import load_csi

    return load_csi(path)


def _with_checkpoint(result: TrainResult, path: Path) -> TrainResult:
    from dataclasses import replace

    return replace(result, checkpoint=path)
