"""Run a loaded model, or one side of it, on arrays from .npy files.

`full` and `encoder` take CSI as the model's input spec says, (N, 2, 32, 32) float in [0, 1];
`decoder` takes codewords (N, codeword_length). Outputs are float32: reconstructed CSI
(N, 2, 32, 32) for `full` and `decoder`, codewords (N, codeword_length) for `encoder`.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from csideploy.calibration.io import check_csi_values
from csideploy.calibration.npy_bounds import check_npy_header
from csideploy.errors import (
    CheckpointError,
    CsiDeployError,
    DataError,
    OutputExistsError,
    ShapeError,
)
from csideploy.models.checkpoint import load_model, write_atomic
from csideploy.models.registry import CsiAutoencoder, get_entry

PARTS = ("full", "encoder", "decoder")
DEFAULT_BATCH_SIZE = 256


@dataclass(frozen=True)
class InferenceResult:
    """What `infer_file` ran and wrote."""

    output: Path
    part: str
    model: str
    cr: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    checkpoint_sha256: str
    source_format: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "part": self.part,
            "model": self.model,
            "cr": self.cr,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "checkpoint_sha256": self.checkpoint_sha256,
            "source_format": self.source_format,
            "seconds": round(self.seconds, 4),
        }


def expected_input_shape(model: CsiAutoencoder, part: str) -> tuple[int, ...]:
    """The input shape of `part` without the batch dimension."""
    _check_part(part)
    if part == "decoder":
        return (int(model.codeword_length),)
    return tuple(get_entry(model.model_name).input_spec.shape)


def run_model(
    model: CsiAutoencoder,
    x: np.ndarray,
    *,
    part: str = "full",
    batch_size: int = DEFAULT_BATCH_SIZE,
    what: str = "input",
) -> np.ndarray:
    """`part` of `model` on `x` in batches, as a float32 array; `what` names `x` in errors."""
    expected = expected_input_shape(model, part)
    if x.ndim != len(expected) + 1 or tuple(x.shape[1:]) != expected:
        raise ShapeError(
            f"{what}: expected shape {_shape_text(expected)} for the {part} input of "
            f"{model.model_name} CR 1/{model.cr}, found {tuple(x.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    module = {"full": model, "encoder": model.encoder, "decoder": model.decoder}[part]
    module.eval()
    data = np.ascontiguousarray(x, dtype=np.float32)
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            batch = torch.from_numpy(data[start : start + batch_size])
            outputs.append(module(batch).reshape(len(batch), -1).numpy())
    flat = np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)
    out_shape = (len(data), *_output_shape(model, part))
    return flat.reshape(out_shape).astype(np.float32, copy=False)


def infer_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    model: str,
    cr: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    decoder_checkpoint: str | os.PathLike[str] | None = None,
    part: str = "full",
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
) -> InferenceResult:
    """Load the model (the shipped checkpoint when none is given), run `part` on the .npy
    file at `input_path` and write the float32 result to `output_path` atomically."""
    _check_part(part)
    out = Path(output_path)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --force to replace it")
    if out.is_dir():
        raise OutputExistsError(f"{out} is a directory; give an output .npy file name")
    check_writable(out)
    loaded = load_model(model, cr, checkpoint, decoder_checkpoint=decoder_checkpoint)
    x = read_array(input_path)
    if part != "decoder" and tuple(x.shape[1:]) == expected_input_shape(loaded.model, part):
        check_csi_values(x, input_path)  # the same value checks as evaluate and train
    started = time.perf_counter()
    y = run_model(loaded.model, x, part=part, batch_size=batch_size, what=str(input_path))
    seconds = time.perf_counter() - started
    _check_finite_output(y, loaded.name, loaded.cr, loaded.metadata.get("path"))
    write_atomic(out, lambda fh: np.save(fh, y, allow_pickle=False))
    return InferenceResult(
        output=out,
        part=part,
        model=loaded.name,
        cr=loaded.cr,
        input_shape=tuple(x.shape),
        output_shape=tuple(y.shape),
        checkpoint_sha256=loaded.sha256,
        source_format=loaded.source_format,
        seconds=seconds,
    )


def read_array(path: str | os.PathLike[str]) -> np.ndarray:
    """A finite, real, non-empty numeric array from a .npy file (no pickles)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file not found: {p}")
    check_npy_header(p)
    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{p} is not a readable .npy array: {error}") from None
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{p} holds several arrays (.npz); give a single-array .npy file")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{p} holds {arr.dtype} values; expected real numbers")
    if arr.ndim == 0 or len(arr) == 0:
        raise ShapeError(f"{p}: expected at least one sample, found shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.isfinite(arr).sum())
        raise DataError(f"{p} holds {bad} NaN or inf values")
    return arr


def check_writable(out: Path) -> None:
    """An error now, before the model runs, when `out` cannot be created where it is asked for.

    Probed with a temporary file in the nearest existing directory (removed at once), so
    read-only file systems and permissions count as they will when the result is written."""
    parent = next((p for p in out.absolute().parents if p.exists()), Path("/"))
    if not parent.is_dir():
        raise CsiDeployError(f"cannot write {out}: {parent} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=parent)
    except OSError as error:
        raise CsiDeployError(
            f"cannot write {out}: {parent} is not writable ({error.strerror or error})"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _check_finite_output(y: np.ndarray, name: str, cr: int, checkpoint: str | None) -> None:
    """Refuse to write NaN / inf results (weights that overflow float32, for one)."""
    bad = int(y.size - np.count_nonzero(np.isfinite(y)))
    if bad:
        source = checkpoint or "the shipped checkpoint"
        raise CheckpointError(
            f"{name} CR 1/{cr} from {source} gave {bad} NaN or inf values of {y.size}: its "
            "weights overflow float32; nothing written"
        )


def _output_shape(model: CsiAutoencoder, part: str) -> tuple[int, ...]:
    if part == "encoder":
        return (int(model.codeword_length),)
    return tuple(get_entry(model.model_name).input_spec.shape)


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}; got {part!r}")


def _shape_text(shape: tuple[int, ...]) -> str:
    return "(N, " + ", ".join(str(d) for d in shape) + ")"
