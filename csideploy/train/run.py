"""`train`: data -> model -> recipe -> checkpoint.

A fresh model gets the papers' initialisation (`init_weights`), seeded by the config; the
checkpoint's metadata records the config, data, validation NMSE and timing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.errors import DataError, DistributedError
from csideploy.models.registry import CsiAutoencoder
from csideploy.train import distributed
from csideploy.train.config import TrainConfig, TrainResult, is_paired
from csideploy.train.loop import fit
from csideploy.train.options import initial_model
from csideploy.train.paired import check_paired_run, train_paired
from csideploy.train.resume import resume_path
from csideploy.train.run_info import describe_data, run_metadata, with_checkpoint


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
    against its builder and kept in the checkpoint. A model registered with a `paired_recipe`
    (DualNet-MP) runs that two-stage recipe on paired files. The project checkpoint's
    metadata records the config, data, validation NMSE and timing.
    """
    out = Path(out_path)
    if out.is_dir():
        raise DataError(f"output path {out} is a directory; give a checkpoint file name")
    launch = distributed.launch_from_env(config)
    if is_paired(model_name):
        check_paired_run(model_name, config, resume)
        if launch.distributed:
            raise DistributedError(
                f"{model_name}'s two-stage recipe runs in one process; start it without torchrun"
            )
    files = _resolve_train_val(data, scenario)
    common = {"out": out, "progress": progress, "init_from": init_from, "options": options}
    if is_paired(model_name):
        return train_paired(model_name, cr, files, config, **common)
    with distributed.process_group(launch):
        return _train_single(model_name, cr, files, config, resume=resume, **common)


def _train_single(
    model_name: str,
    cr: int,
    files: tuple[Path, Path],
    config: TrainConfig,
    *,
    out: Path,
    resume: bool,
    progress: bool,
    init_from: CsiAutoencoder | None,
    options: Mapping[str, Any] | None,
) -> TrainResult:
    """`fit` on the loaded files, then the checkpoint; in a process group every rank trains
    and rank 0 alone writes (the resume state and the checkpoint)."""
    from csideploy.models.checkpoint import save_checkpoint

    train_x = _load(files[0])
    val_x = _load(files[1])
    model = initial_model(model_name, cr, config, options, init_from)
    result = fit(
        model,
        train_x,
        val_x,
        config,
        progress=progress,
        state_path=resume_path(out),
        resume=resume,
    )
    data_info = describe_data(files[0], len(train_x), files[1], len(val_x))
    metadata = run_metadata(result, config, data_info, init_from)
    size, rank = distributed.world()
    if size > 1:
        metadata["distributed"] = distributed.describe_world(config)
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out, result.model, metadata=metadata)
    return with_checkpoint(result, out)


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


def _load(path: Path) -> np.ndarray:
    from csideploy.calibration.io import load_csi

    return load_csi(path)
