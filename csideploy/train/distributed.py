"""Training under torchrun: the process group from its environment, each rank's share of a
global batch, and the collectives that keep every rank's bookkeeping equal to one process's.

The recipe does not change with the number of processes W: `--batch-size B` is the global
batch, the learning-rate schedule is the same, every rank draws the same seeded permutation
of the training set each epoch and takes a contiguous 1/W of each global batch, so the union
of the ranks' samples at every step is the single-process batch. BatchNorm uses statistics of
the global batch (`sync_norm`), each rank's loss is weighted so that DistributedDataParallel's
gradient average is the gradient of the global mean loss, and the validation NMSE is computed
by rank 0 and broadcast. Only rank 0 shows progress and writes files.

torchrun sets WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; the process group
uses gloo on CPU and NCCL on CUDA (one device per local rank).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from csideploy.errors import DistributedError
from csideploy.train.config import TrainConfig, resolve_device

_ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
_NOISE_SEED_STRIDE = 1_000_003
"""Spacing of the per-(epoch, rank) seeds of training noise (a prime above any rank count)."""


@dataclass(frozen=True)
class Launch:
    """How this process was started: alone (world size 1) or as one rank of a torchrun job."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None
    global_batch: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes."""
        return self.rank == 0

    @property
    def per_rank_batch(self) -> int:
        return self.global_batch // self.world_size

    def describe(self, config: TrainConfig) -> str:
        """The line rank 0 prints once: who trains with which batch and learning rate."""
        return (
            f"distributed: world size {self.world_size} ({self.backend}), per-rank batch "
            f"{self.per_rank_batch}, global batch {self.global_batch}, peak lr {config.lr:g} "
            f"({config.scheduler}); the recipe of one process with batch {self.global_batch}"
        )


def launch_from_env(config: TrainConfig, env: Mapping[str, str] | None = None) -> Launch:
    """Read torchrun's variables; refuse a global batch that does not split evenly.

    Without WORLD_SIZE (or with 1) this is a single-process run.
    """
    env = os.environ if env is None else env
    world = _env_int(env, "WORLD_SIZE", 1)
    if world == 1:
        return Launch(global_batch=config.batch_size)
    rank, local_rank = _env_int(env, "RANK", None), _env_int(env, "LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise DistributedError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    missing = [key for key in ("MASTER_ADDR", "MASTER_PORT") if not env.get(key)]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE is set but {' and '.join(missing)} not; start with torchrun"
        )
    check_split(0, config.batch_size, world)
    backend = "nccl" if resolve_device(config.device).type == "cuda" else "gloo"
    return Launch(world, rank, local_rank, backend, config.batch_size)


def _env_int(env: Mapping[str, str], key: str, default: int | None) -> int:
    """An integer environment variable (torchrun's), or `default` when it is unset."""
    raw = env.get(key)
    if raw is None:
        if default is None:
            raise DistributedError(f"WORLD_SIZE is set but {key} is not; start with torchrun")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DistributedError(f"{key}={raw!r} is not an integer") from None
    if value < (1 if key == "WORLD_SIZE" else 0):
        raise DistributedError(f"{key}={value} is out of range")
    return value


@contextlib.contextmanager
def process_group(launch: Launch) -> Iterator[None]:
    """Join torchrun's process group for the run (nothing for one process); leave it after."""
    if not launch.distributed or dist.is_initialized():
        yield
        return
    if launch.backend == "nccl":
        torch.cuda.set_device(launch.local_rank)
    try:
        dist.init_process_group(launch.backend, rank=launch.rank, world_size=launch.world_size)
    except (RuntimeError, ValueError) as error:
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise DistributedError(f"cannot join the process group at {where}: {error}") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(world size, rank) of the initialised process group, or (1, 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def describe_world(config: TrainConfig) -> dict[str, object]:
    """What a checkpoint records about the processes that trained it."""
    size, _ = world()
    return {
        "world_size": size,
        "backend": dist.get_backend(),
        "global_batch": config.batch_size,
        "per_rank_batch": config.batch_size // size,
        "batch_norm": "statistics of the global batch (csideploy.train.sync_norm)",
    }


def device_for(config: TrainConfig) -> torch.device:
    """The configured device; on CUDA under a process group, this process's own GPU."""
    device = resolve_device(config.device)
    if device.type == "cuda" and world()[0] > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around `model` (its BatchNorms already global).

    Buffers are not broadcast before every forward: the global BatchNorms keep their running
    statistics equal on every rank by themselves.
    """
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def check_split(n_train: int, batch_size: int, size: int) -> None:
    """Refuse a global batch that does not split evenly, or a last batch too small to give
    every rank a sample (a rank with none cannot run the model)."""
    if batch_size % size:
        raise DistributedError(
            f"--batch-size {batch_size} is the global batch and must split evenly "
            f"over the {size} processes; give a multiple of {size}"
        )
    last = n_train % batch_size
    if 0 < last < size:
        raise DistributedError(
            f"the last global batch holds {last} of the {n_train} training samples, fewer "
            f"than the {size} processes; choose a batch size that leaves none or at least {size}"
        )


def rank_part(batch: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This rank's contiguous share of the global batch `batch` (indices), and the factor its
    mean loss takes so that the average over ranks is the global mean loss's gradient."""
    size, rank = world()
    part = torch.tensor_split(batch, size)[rank]
    return part, len(part) * size / len(batch)


def seed_noise(seed: int, epoch: int) -> None:
    """Seed the draws of training noise per (epoch, rank): independent across ranks, and the
    same again when a run resumes at `epoch`."""
    _, rank = world()
    torch.manual_seed(seed + _NOISE_SEED_STRIDE * (epoch + 1) + rank)


def total(value: float, device: torch.device) -> float:
    """Sum of `value` over all ranks (in float64)."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def from_main(value: float, device: torch.device) -> float:
    """Rank 0's `value`, on every rank."""
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def refuse_data_dependent_init(model: nn.Module) -> None:
    """A learned codeword quantizer sets its scale from the first batch it sees, which is a
    different share on each rank; the ranks would start from different models."""
    from csideploy.models.quantizers import LearnedQuantizer

    if any(isinstance(m, LearnedQuantizer) and not bool(m.initialized) for m in model.modules()):
        raise DistributedError(
            "a learned codeword quantizer (--quantizer) sets its scale from the first batch, "
            "which torchrun splits over processes; train this model in one process"
        )
