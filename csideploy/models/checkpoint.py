"""Checkpoints in, strictly loaded models out; and the project's own checkpoint format.

`load_checkpoint` reads every format users hand the toolkit:

- the project's own file (`save_checkpoint`): model name, CR, state dict and metadata;
- CRNet / CLNet / CLLWCsiNet trainer dicts (`state_dict` or `model_state_dict` beside the
  epoch, optimizer and pickled `utils.solver.Result` records), read through
  `safe_pickle.safe_load` so that nothing in the file runs;
- CLNet's separate encoder / decoder files (`32encoder.pth.tar`, `32decoder.pth.tar`; the
  authors' CR 1/64 pair is the outdoor model: compare it with the outdoor -2.19 dB);
- bare state dicts, in the project layout (`encoder.*` / `decoder.*`) or an official flat one
  (CRNet's `encoder1.*`, `decoder_fc.*`, ... split by the registry's `flat_prefixes`);
- a whole `nn.Module` pickled with `torch.save(model)`: its weights are read from the pickle
  without importing its classes;
- with or without DataParallel's `module.` prefix, with FLOP-counter (thop) keys dropped;
- the original CsiNet Keras weights (`.h5`), read with h5py alone (`keras_h5`).

Loading is strict: any missing, unexpected or mis-shaped key is an error that names it.
The model name comes from the file, the caller, or an exact match of the keys against the zoo;
the CR from the codeword layer's shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from csideploy.errors import CheckpointError, CsiDeployError
from csideploy.models import zoo_weights
from csideploy.models.checkpoint_formats import SourceFile, StateDict, clean, read_file, unpack
from csideploy.models.checkpoint_layout import (
    SIDES,
    resolve_cr,
    resolve_layout,
    strict_model,
    to_project_layout,
)
from csideploy.models.keras_h5 import is_hdf5, read_csinet_h5
from csideploy.models.registry import CsiAutoencoder, check_cr, get_entry
from csideploy.models.safe_pickle import plain, safe_load

FORMAT = "csideploy-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = zoo_weights.CHECKPOINT_DIR
"""Where the shipped checkpoints live; `zoo_weights` says which files ship."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model loaded strictly from a checkpoint, in eval mode, and where it came from."""

    model: CsiAutoencoder
    name: str
    cr: int
    source_format: str
    """'csideploy', 'trainer-dict', 'clnet-split', 'state-dict', 'pickled-module' or 'keras-h5'."""
    sha256: str
    """Of the file; for an encoder / decoder pair, of the two files' bytes concatenated."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """What the file records (JSON-safe), plus `path` (and `decoder_path`) of the file(s)."""
    dropped_keys: tuple[str, ...] = ()
    """Keys left out before loading: FLOP-counter leftovers ending in total_ops/total_params."""
    inferred_from: tuple[str, ...] = ()
    """When the model name was not given: the keys that revealed it."""

    def summary(self) -> dict[str, Any]:
        """JSON-safe description (without the model)."""
        return {
            "model": self.name,
            "cr": self.cr,
            "codeword_length": self.model.codeword_length,
            "source_format": self.source_format,
            "sha256": self.sha256,
            "path": self.metadata.get("path"),
            "dropped_keys": len(self.dropped_keys),
            "inferred_from": list(self.inferred_from),
        }


# --------------------------------------------------------------------------- public API


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: str | None = None,
    cr: int | None = None,
    decoder_path: str | os.PathLike[str] | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint of any supported format strictly into a fresh model.

    `model` and `cr` may be left out when the file reveals them; when given, they must agree
    with it. `decoder_path` pairs an encoder-only file with its decoder file (CLNet's
    `32encoder.pth.tar` / `32decoder.pth.tar`); a sibling named like the given file with
    `encoder` and `decoder` swapped is found without it.
    """
    if model is not None:
        get_entry(model)
    source = read_file(path)
    if is_hdf5(source.data):
        return _load_keras_h5(source, model=model, cr=cr, decoder_path=decoder_path)
    payload = safe_load(source.data, label=source.label)
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        if decoder_path is not None:
            raise CheckpointError(
                f"{source.label} is a whole csideploy checkpoint; a decoder file does not apply"
            )
        return _load_project_file(source, payload, model=model, cr=cr)
    state = unpack(payload, source.label)
    if decoder_path is not None:
        decoder = read_file(decoder_path)
        decoder_state = unpack(safe_load(decoder.data, label=decoder.label), decoder.label)
        return _load_pair(source, state, decoder, decoder_state, model=model, cr=cr)
    layout, name, inferred = resolve_layout(state.tensors, model, source.label)
    if layout in SIDES:
        return _load_with_sibling(source, state, layout, name, cr=cr, inferred=inferred)
    tensors = to_project_layout(state.tensors, layout, name)
    cr = resolve_cr(name, tensors, cr, source.label)
    return LoadedCheckpoint(
        model=strict_model(name, cr, tensors, source.label),
        name=name,
        cr=cr,
        source_format=state.source_format,
        sha256=source.sha256,
        metadata={**state.info, "path": source.label},
        dropped_keys=state.dropped,
        inferred_from=inferred,
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: CsiAutoencoder,
    *,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write `model` in the project format, atomically; loadable with `weights_only=True`.

    The file holds `{'format', 'version', 'model', 'cr', 'state_dict', 'metadata'}`;
    `metadata` must be JSON-serialisable (config, data, scores, versions).
    """
    if not isinstance(model, CsiAutoencoder):
        raise TypeError(f"save_checkpoint needs a CsiAutoencoder, got {type(model).__name__}")
    check_cr(get_entry(model.model_name), model.cr)
    try:
        meta = json.loads(json.dumps(dict(metadata or {})))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint metadata is not JSON-serialisable: {error}") from None
    state = OrderedDict(
        (key, value.detach().to("cpu").clone()) for key, value in model.state_dict().items()
    )
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": model.model_name,
        "cr": int(model.cr),
        "state_dict": state,
        "metadata": meta,
        "build_options": json.loads(json.dumps(getattr(model, "build_options", {}) or {})),
    }
    out = Path(path)
    write_atomic(out, lambda fh: torch.save(payload, fh))
    return out


def default_checkpoint_path(name: str, cr: int) -> Path | None:
    """The checkpoint the package ships for (name, CR), or None when there is none."""
    entry = zoo_weights.find_shipped(name, cr)
    if entry is None:
        return None
    path = CHECKPOINT_DIR / entry.file
    return path if path.is_file() else None


def load_model(
    name: str,
    cr: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    decoder_checkpoint: str | os.PathLike[str] | None = None,
) -> LoadedCheckpoint:
    """`name` from `checkpoint`, or from the shipped checkpoint when none is given.

    Without a checkpoint, `cr` defaults to the shipped CR of `name` (else 4); a (model, CR)
    with no shipped checkpoint is an error that says to pass one.
    """
    entry = get_entry(name)
    if checkpoint is not None:
        return load_checkpoint(checkpoint, model=name, cr=cr, decoder_path=decoder_checkpoint)
    if decoder_checkpoint is not None:
        raise CheckpointError("a decoder checkpoint was given without its encoder checkpoint")
    wanted = cr if cr is not None else _shipped_cr(name)
    check_cr(entry, wanted)
    shipped = default_checkpoint_path(name, wanted)
    if shipped is None:
        raise CheckpointError(
            f"no checkpoint given and none shipped for {name} CR 1/{wanted}; pass --checkpoint FILE"
        )
    return load_checkpoint(shipped, model=name, cr=wanted)


def write_atomic(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write through `write(fh)` into a temp file beside `path`, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- formats


def _load_project_file(
    source: SourceFile, payload: Mapping[str, Any], *, model: str | None, cr: int | None
) -> LoadedCheckpoint:
    label = source.label
    version = payload.get("version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{label}: csideploy checkpoint version {version!r}; this csideploy reads "
            f"version {FORMAT_VERSION}"
        )
    name, saved_cr = payload.get("model"), payload.get("cr")
    if not isinstance(name, str) or not isinstance(saved_cr, int):
        raise CheckpointError(f"{label}: the csideploy checkpoint lacks its model name or CR")
    try:
        check_cr(get_entry(name), saved_cr)
    except CsiDeployError as error:
        raise CheckpointError(f"{label}: {error}") from None
    if model is not None and model != name:
        raise CheckpointError(
            f"--model {model} conflicts with the checkpoint: {label} holds {name}"
        )
    if cr is not None and cr != saved_cr:
        raise CheckpointError(
            f"--cr {cr} conflicts with the checkpoint: {label} holds {name} CR 1/{saved_cr}"
        )
    raw = payload.get("state_dict")
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{label}: the csideploy checkpoint has no state_dict")
    tensors, dropped = clean(raw, label)
    metadata = payload.get("metadata")
    options = payload.get("build_options") or {}
    if not isinstance(options, Mapping):
        raise CheckpointError(f"{label}: build_options must be a mapping, got {type(options)}")
    return LoadedCheckpoint(
        model=strict_model(name, saved_cr, tensors, label, options=plain(options, label=label)),
        name=name,
        cr=saved_cr,
        source_format="csideploy",
        sha256=source.sha256,
        metadata={
            **(plain(metadata, label=label) if isinstance(metadata, Mapping) else {}),
            "path": label,
        },
        dropped_keys=dropped,
    )


def _load_keras_h5(
    source: SourceFile,
    *,
    model: str | None,
    cr: int | None,
    decoder_path: str | os.PathLike[str] | None,
) -> LoadedCheckpoint:
    """The original CsiNet Keras weights (`model_CsiNet_*_dim*.h5`), read with h5py only."""
    label = source.label
    if model not in (None, "csinet") or decoder_path is not None:
        given = f"--model {model}" if model not in (None, "csinet") else "a decoder file"
        raise CheckpointError(f"{label} is a Keras .h5 file of CsiNet; {given} does not apply")
    tensors, info = read_csinet_h5(source.data, label=label)
    cr = resolve_cr("csinet", tensors, cr, label)
    return LoadedCheckpoint(
        model=strict_model("csinet", cr, tensors, label),
        name="csinet",
        cr=cr,
        source_format="keras-h5",
        sha256=source.sha256,
        metadata={**info, "path": label},
    )


def _load_pair(
    encoder: SourceFile,
    encoder_state: StateDict,
    decoder: SourceFile,
    decoder_state: StateDict,
    *,
    model: str | None,
    cr: int | None,
    inferred: tuple[str, ...] = (),
) -> LoadedCheckpoint:
    """An encoder-only file and a decoder-only file, keys prefixed `encoder.` / `decoder.`."""
    tensors = {f"encoder.{k}": v for k, v in encoder_state.tensors.items()}
    tensors.update({f"decoder.{k}": v for k, v in decoder_state.tensors.items()})
    label = f"{encoder.label} + {decoder.label}"
    _, name, revealing = resolve_layout(tensors, model, label, layouts=("full",))
    cr = resolve_cr(name, tensors, cr, label)
    dropped = tuple(f"encoder.{k}" for k in encoder_state.dropped) + tuple(
        f"decoder.{k}" for k in decoder_state.dropped
    )
    metadata: dict[str, Any] = {
        "path": encoder.label,
        "decoder_path": decoder.label,
        "files": [
            {"path": encoder.label, "sha256": encoder.sha256},
            {"path": decoder.label, "sha256": decoder.sha256},
        ],
    }
    for side, state in (("encoder_file", encoder_state), ("decoder_file", decoder_state)):
        if state.info:
            metadata[side] = state.info
    return LoadedCheckpoint(
        model=strict_model(name, cr, tensors, label),
        name=name,
        cr=cr,
        source_format="clnet-split",
        sha256=hashlib.sha256(encoder.data + decoder.data).hexdigest(),
        metadata=metadata,
        dropped_keys=dropped,
        inferred_from=inferred or revealing,
    )


def _load_with_sibling(
    source: SourceFile,
    state: StateDict,
    side: str,
    name: str,
    *,
    cr: int | None,
    inferred: tuple[str, ...],
) -> LoadedCheckpoint:
    """A file holding one side only: find the other side's file beside it, by name."""
    other = "decoder" if side == "encoder" else "encoder"
    file_name = source.path.name
    sibling = (
        source.path.with_name(_replace_last(file_name, side, other)) if side in file_name else None
    )
    if sibling is None or not sibling.is_file():
        looked = f" (looked for {sibling})" if sibling is not None else ""
        raise CheckpointError(
            f"{source.label} holds only the {side} of {name}; give the {other} file too "
            f"(decoder_path / --decoder-checkpoint){looked}"
        )
    found = read_file(sibling)
    found_state = unpack(safe_load(found.data, label=found.label), found.label)
    if side == "encoder":
        pair = (source, state, found, found_state)
    else:
        pair = (found, found_state, source, state)
    return _load_pair(*pair, model=name, cr=cr, inferred=inferred)


def _replace_last(text: str, old: str, new: str) -> str:
    head, _, tail = text.rpartition(old)
    return f"{head}{new}{tail}"


def _shipped_cr(name: str) -> int:
    shipped = zoo_weights.shipped_crs(name)
    return shipped[0] if shipped else 4
