"""Reading checkpoint files: bytes with their hash, and the state dict inside a container.

`read_file` reads a file once (its sha256 names it in results); `unpack` finds the state dict
in a trainer dict (`state_dict` / `model_state_dict`, CRNet, CLNet and CLLWCsiNet trainers), a
bare state dict or a module pickled whole, and `clean` strips DataParallel prefixes and
FLOP-counter keys. What a container says besides its weights is kept JSON-safe and bounded.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from csideploy.errors import CheckpointError
from csideploy.models.safe_pickle import (
    PickledObject,
    iter_placeholders,
    pickled_module_state,
    plain,
)

STATE_KEYS = ("state_dict", "model_state_dict")
BULKY_ENTRIES = frozenset(
    {
        "optimizer",
        "scheduler",
        "optimizer_state_dict",
        "scheduler_state_dict",
        "lr_scheduler",
        "lr_state_dict",
    }
)
"""Trainer-dict entries left out of the metadata: optimizer and learning-rate schedule state."""
_FLOP_COUNTER_SUFFIXES = ("total_ops", "total_params")
_DATA_PARALLEL_PREFIX = "module."
_MAX_LISTED = 12


@dataclass(frozen=True)
class SourceFile:
    """A checkpoint file's path, bytes and sha256."""

    path: Path
    data: bytes
    sha256: str

    @property
    def label(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class StateDict:
    """A state dict taken out of its container, cleaned, with what the container said."""

    tensors: dict[str, torch.Tensor]
    source_format: str
    info: dict[str, Any]
    dropped: tuple[str, ...]


def read_file(path: str | os.PathLike[str]) -> SourceFile:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint file not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory, not a checkpoint file")
    try:
        data = p.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {p}: {error.strerror or error}") from None
    if not data:
        raise CheckpointError(f"cannot read {p}: the file is empty")
    return SourceFile(p, data, hashlib.sha256(data).hexdigest())


def unpack(payload: Any, label: str) -> StateDict:
    """The state dict inside a trainer dict, wrapper dict, bare state dict or a module
    pickled whole, cleaned."""
    module_state = (
        pickled_module_state(payload, label=label) if isinstance(payload, PickledObject) else None
    )
    if module_state:
        tensors, dropped = clean(module_state, label)
        info = {"pickled_class": payload.qualified_name}
        return StateDict(tensors, "pickled-module", info, dropped)
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"{label} holds a {type(payload).__name__}, not a state dict or checkpoint dict"
        )
    for key in STATE_KEYS:
        if isinstance(payload.get(key), Mapping):
            info = _container_info(payload, key, label)
            tensors, dropped = clean(payload[key], f"{label} [{key}]")
            return StateDict(tensors, "trainer-dict", info, dropped)
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        tensors, dropped = clean(payload, label)
        return StateDict(tensors, "state-dict", {}, dropped)
    keys = ", ".join(sorted(map(str, payload))[:_MAX_LISTED]) or "none"
    raise CheckpointError(
        f"{label} holds a dict without 'state_dict' or 'model_state_dict' and not only "
        f"tensors (keys: {keys})"
    )


def _container_info(payload: Mapping[str, Any], state_key: str, label: str) -> dict[str, Any]:
    """JSON-safe record of a trainer dict's other entries (optimizer state left out)."""
    info: dict[str, Any] = {"state_key": state_key}
    left_out = []
    for key, value in payload.items():
        if key == state_key:
            continue
        if key in BULKY_ENTRIES:
            left_out.append(str(key))
            continue
        info[str(key)] = plain(value, label=label)
    if left_out:
        info["not_loaded"] = left_out
    stubbed = sorted(
        {p.qualified_name for p in iter_placeholders(list(payload.values()), label=label)}
    )
    if stubbed:
        info["unimported_classes"] = stubbed
    return info


def clean(raw: Mapping[Any, Any], label: str) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Strip DataParallel's `module.` prefix and drop FLOP-counter keys; all else is kept."""
    if not raw:
        raise CheckpointError(f"{label}: the state dict is empty")
    keys = [str(k) for k in raw]
    strip = all(k.startswith(_DATA_PARALLEL_PREFIX) for k in keys)
    tensors: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for original, value in zip(keys, raw.values(), strict=True):
        key = original[len(_DATA_PARALLEL_PREFIX) :] if strip else original
        if key.rsplit(".", 1)[-1] in _FLOP_COUNTER_SUFFIXES:
            dropped.append(key)
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{label}: entry {original!r} is a {type(value).__name__}, not a tensor"
            )
        tensors[key] = value
    if not tensors:
        raise CheckpointError(f"{label}: the state dict holds no weights")
    return tensors, tuple(dropped)
