"""What a trained checkpoint records about its run: config, data, scores, versions, machine."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from csideploy.models.registry import CsiAutoencoder
from csideploy.train.config import (
    INIT_DESCRIPTION,
    NMSE_CONVENTION,
    TrainConfig,
    TrainResult,
    resolve_device,
)


def describe_data(train_file: Path, n_train: int, val_file: Path, n_val: int) -> dict[str, Any]:
    return {
        "train_file": str(train_file),
        "train_samples": n_train,
        "val_file": str(val_file),
        "val_samples": n_val,
        **_dataset_description(train_file.parent),
    }


def run_metadata(
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
        "init": "init_from" if init_from is not None else INIT_DESCRIPTION,
    }


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


def with_checkpoint(result: TrainResult, path: Path) -> TrainResult:

    return replace(result, checkpoint=path)
