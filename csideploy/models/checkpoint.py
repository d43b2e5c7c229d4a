"""Checkpoints in, strictly loaded models out; and the project's own checkpoint format.

`load_checkpoint` reads every format users hand the toolkit (REFERENCE.md section 5):

- the project's own file (`save_checkpoint`): model name, CR, state dict and metadata;
- CRNet / CLNet / CLLWCsiNet trainer dicts (`state_dict` or `model_state_dict` beside the
  epoch, optimizer and pickled `utils.solver.Result` records), read through
  `safe_pickle.safe_load` so that nothing in the file runs;
- CLNet's separate encoder / decoder files (`32encoder.pth.tar`, `32decoder.pth.tar`);
- bare state dicts, in the project layout (`encoder.*` / `decoder.*`) or an official flat one
  (CRNet's `encoder1.*`, `decoder_fc.*`, ... split by the registry's `flat_prefixes`);
- a whole `nn.Module` pickled with `torch.save(model)`: its weights are read from the pickle
  without importing its classes;
- with or without DataParallel's `module.` prefix, with FLOP-counter (thop) keys dropped.

Loading is strict: any missing, unexpected or mis-shaped key is an error that names it.
The model name comes from the file, the caller, or an exact match of the keys against the zoo;
the CR from the codeword layer's shape.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from csideploy.errors import CheckpointError, CsiDeployError
from csideploy.models.registry import CsiAutoencoder, build, check_cr, get_entry, list_models
from csideploy.models.safe_pickle import (
    PickledObject,
    iter_placeholders,
    pickled_module_state,
    plain,
    safe_load,
)

FORMAT = "csideploy-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
SHIPPED: Mapping[tuple[str, int], str] = {("clnet", 4): "clnet_cr4_indoor.pt"}
"""(model, CR) -> file name under `csideploy/checkpoints/` of the checkpoints the package ships."""

_STATE_KEYS = ("state_dict", "model_state_dict")
_BULKY_ENTRIES = frozenset(
    {"optimizer", "scheduler", "optimizer_state_dict", "scheduler_state_dict", "lr_scheduler"}
)
_FLOP_COUNTER_SUFFIXES = ("total_ops", "total_params")
_DATA_PARALLEL_PREFIX = "module."
_SIDES = ("encoder", "decoder")
_MAX_LISTED = 12


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A model loaded strictly from a checkpoint, in eval mode, and where it came from."""

    model: CsiAutoencoder
    name: str
    cr: int
    source_format: str
    """'csideploy', 'trainer-dict', 'clnet-split', 'state-dict' or 'pickled-module'."""
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


@dataclass(frozen=True)
class _File:
    path: Path
    data: bytes
    sha256: str

    @property
    def label(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class _StateDict:
    """A state dict taken out of its container, cleaned, with what the container said."""

    tensors: dict[str, torch.Tensor]
    source_format: str
    info: dict[str, Any]
    dropped: tuple[str, ...]


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
    source = _read(path)
    payload = safe_load(source.data, label=source.label)
    if isinstance(payload, Mapping) and payload.get("format") == FORMAT:
        if decoder_path is not None:
            raise CheckpointError(
                f"{source.label} is a whole csideploy checkpoint; a decoder file does not apply"
            )
        return _load_project_file(source, payload, model=model, cr=cr)
    state = _unpack(payload, source.label)
    if decoder_path is not None:
        decoder = _read(decoder_path)
        decoder_state = _unpack(safe_load(decoder.data, label=decoder.label), decoder.label)
        return _load_pair(source, state, decoder, decoder_state, model=model, cr=cr)
    layout, name, inferred = _resolve_layout(state.tensors, model, source.label)
    if layout in _SIDES:
        return _load_with_sibling(source, state, layout, name, cr=cr, inferred=inferred)
    tensors = _to_project_layout(state.tensors, layout, name)
    cr = _resolve_cr(name, tensors, cr, source.label)
    return LoadedCheckpoint(
        model=_strict_model(name, cr, tensors, source.label),
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
    file_name = SHIPPED.get((name, cr))
    if file_name is None:
        return None
    path = CHECKPOINT_DIR / file_name
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


# --------------------------------------------------------------------------- reading


def _read(path: str | os.PathLike[str]) -> _File:
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
    return _File(p, data, hashlib.sha256(data).hexdigest())


def _unpack(payload: Any, label: str) -> _StateDict:
    """The state dict inside a trainer dict, wrapper dict, bare state dict or a module
    pickled whole, cleaned."""
    module_state = pickled_module_state(payload) if isinstance(payload, PickledObject) else None
    if module_state:
        tensors, dropped = _clean(module_state, label)
        info = {"pickled_class": payload.qualified_name}
        return _StateDict(tensors, "pickled-module", info, dropped)
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"{label} holds a {type(payload).__name__}, not a state dict or checkpoint dict"
        )
    for key in _STATE_KEYS:
        if isinstance(payload.get(key), Mapping):
            info = _container_info(payload, key)
            tensors, dropped = _clean(payload[key], f"{label} [{key}]")
            return _StateDict(tensors, "trainer-dict", info, dropped)
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        tensors, dropped = _clean(payload, label)
        return _StateDict(tensors, "state-dict", {}, dropped)
    keys = ", ".join(sorted(map(str, payload))[:_MAX_LISTED]) or "none"
    raise CheckpointError(
        f"{label} holds a dict without 'state_dict' or 'model_state_dict' and not only "
        f"tensors (keys: {keys})"
    )


def _container_info(payload: Mapping[str, Any], state_key: str) -> dict[str, Any]:
    """JSON-safe record of a trainer dict's other entries (optimizer state left out)."""
    info: dict[str, Any] = {"state_key": state_key}
    left_out = []
    for key, value in payload.items():
        if key == state_key:
            continue
        if key in _BULKY_ENTRIES:
            left_out.append(str(key))
            continue
        info[str(key)] = plain(value)
    if left_out:
        info["not_loaded"] = left_out
    stubbed = sorted({p.qualified_name for p in iter_placeholders(list(payload.values()))})
    if stubbed:
        info["unimported_classes"] = stubbed
    return info


def _clean(raw: Mapping[Any, Any], label: str) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
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


# --------------------------------------------------------------------------- formats


def _load_project_file(
    source: _File, payload: Mapping[str, Any], *, model: str | None, cr: int | None
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
    tensors, dropped = _clean(raw, label)
    metadata = payload.get("metadata")
    options = payload.get("build_options") or {}
    if not isinstance(options, Mapping):
        raise CheckpointError(f"{label}: build_options must be a mapping, got {type(options)}")
    return LoadedCheckpoint(
        model=_strict_model(name, saved_cr, tensors, label, options=plain(options)),
        name=name,
        cr=saved_cr,
        source_format="csideploy",
        sha256=source.sha256,
        metadata={**(plain(metadata) if isinstance(metadata, Mapping) else {}), "path": label},
        dropped_keys=dropped,
    )


def _load_pair(
    encoder: _File,
    encoder_state: _StateDict,
    decoder: _File,
    decoder_state: _StateDict,
    *,
    model: str | None,
    cr: int | None,
    inferred: tuple[str, ...] = (),
) -> LoadedCheckpoint:
    """An encoder-only file and a decoder-only file, keys prefixed `encoder.` / `decoder.`."""
    tensors = {f"encoder.{k}": v for k, v in encoder_state.tensors.items()}
    tensors.update({f"decoder.{k}": v for k, v in decoder_state.tensors.items()})
    label = f"{encoder.label} + {decoder.label}"
    _, name, revealing = _resolve_layout(tensors, model, label, layouts=("full",))
    cr = _resolve_cr(name, tensors, cr, label)
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
        model=_strict_model(name, cr, tensors, label),
        name=name,
        cr=cr,
        source_format="clnet-split",
        sha256=hashlib.sha256(encoder.data + decoder.data).hexdigest(),
        metadata=metadata,
        dropped_keys=dropped,
        inferred_from=inferred or revealing,
    )


def _load_with_sibling(
    source: _File,
    state: _StateDict,
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
    found = _read(sibling)
    found_state = _unpack(safe_load(found.data, label=found.label), found.label)
    if side == "encoder":
        pair = (source, state, found, found_state)
    else:
        pair = (found, found_state, source, state)
    return _load_pair(*pair, model=name, cr=cr, inferred=inferred)


def _replace_last(text: str, old: str, new: str) -> str:
    head, _, tail = text.rpartition(old)
    return f"{head}{new}{tail}"


# --------------------------------------------------------------------------- model and layout


@dataclass(frozen=True)
class _Signature:
    """The key sets a model's checkpoints can have at one CR, by layout."""

    full: frozenset[str]
    flat: frozenset[str] | None
    encoder: frozenset[str]
    decoder: frozenset[str]

    def layouts(self) -> Iterable[tuple[str, frozenset[str]]]:
        yield "full", self.full
        if self.flat is not None:
            yield "flat", self.flat
        yield "encoder", self.encoder
        yield "decoder", self.decoder


def _resolve_layout(
    tensors: Mapping[str, torch.Tensor],
    model: str | None,
    label: str,
    *,
    layouts: tuple[str, ...] = ("full", "flat", "encoder", "decoder"),
) -> tuple[str, str, tuple[str, ...]]:
    """(layout, model name, keys that revealed the name) for a cleaned state dict.

    A given name only picks the layout (strict loading reports any mismatch); without one,
    the keys must equal exactly one registered model's keys in one layout.
    """
    keys = frozenset(tensors)
    names = [model] if model is not None else list_models()
    matches = []
    for name in names:
        layout = _matching_layout(name, keys, layouts)
        if layout is not None:
            matches.append((name, layout))
    if model is not None:
        layout = matches[0][1] if matches else _closest_layout(model, keys, layouts)
        return layout, model, ()
    if len(matches) == 1:
        name, layout = matches[0]
        return layout, name, _revealing_keys(name, keys)
    if matches:
        found = ", ".join(name for name, _ in matches)
        raise CheckpointError(f"{label}: its keys fit several models ({found}); pass --model")
    raise CheckpointError(
        f"{label}: cannot tell which model it holds; its {len(keys)} keys match no registered "
        f"model exactly{_nearest_hint(keys, layouts)}; pass --model NAME"
    )


def _matching_layout(name: str, keys: frozenset[str], layouts: tuple[str, ...]) -> str | None:
    crs = get_entry(name).crs
    if not any(keys & expected for _, expected in _signature(name, crs[0]).layouts()):
        return None  # key names do not depend on the CR: not this model at all
    for cr in crs:
        for layout, expected in _signature(name, cr).layouts():
            if layout in layouts and keys == expected:
                return layout
    return None


def _closest_layout(name: str, keys: frozenset[str], layouts: tuple[str, ...]) -> str:
    """The layout whose key set shares most keys with `keys` (for the strict report)."""
    signature = _signature(name, get_entry(name).crs[0])
    scored = [
        (len(keys & expected) - len(keys ^ expected), layout)
        for layout, expected in signature.layouts()
        if layout in layouts and layout not in _SIDES
    ]
    return max(scored)[1] if scored else "full"


def _nearest_hint(keys: frozenset[str], layouts: tuple[str, ...]) -> str:
    best: tuple[int, str, int, int] | None = None
    for name in list_models():
        signature = _signature(name, get_entry(name).crs[0])
        for layout, expected in signature.layouts():
            if layout not in layouts:
                continue
            missing, unexpected = len(expected - keys), len(keys - expected)
            if best is None or missing + unexpected < best[0]:
                best = (missing + unexpected, name, missing, unexpected)
    if best is None:
        return ""
    _, name, missing, unexpected = best
    return f" (closest: {name}, {missing} missing and {unexpected} unexpected keys)"


def _revealing_keys(name: str, keys: frozenset[str]) -> tuple[str, ...]:
    """Up to three keys of this checkpoint that no other registered model has."""
    others: set[str] = set()
    for other in list_models():
        if other != name:
            for _, expected in _signature(other, get_entry(other).crs[0]).layouts():
                others |= expected
    unique = sorted(keys - others)
    tail = get_entry(name).codeword_key.partition(".")[2]
    codeword = [k for k in unique if k.endswith(tail)]
    picked = codeword + [k for k in unique if k not in codeword]
    return tuple(picked[:3]) if picked else tuple(sorted(keys)[:3])


def _to_project_layout(
    tensors: Mapping[str, torch.Tensor], layout: str, name: str
) -> dict[str, torch.Tensor]:
    """Keys as the project's model names them (`encoder.*` / `decoder.*`)."""
    if layout != "flat":
        return dict(tensors)
    prefixes = get_entry(name).flat_prefixes
    out = {}
    for key, value in tensors.items():
        side = next((s for p, s in prefixes.items() if key.startswith(p)), None)
        out[f"{side}.{key}" if side else key] = value
    return out


def _flat_name(name: str, key: str) -> str:
    for prefix, side in get_entry(name).flat_prefixes.items():
        if key.startswith(f"{side}.{prefix}"):
            return key[len(side) + 1 :]
    return key


def _resolve_cr(
    name: str, tensors: Mapping[str, torch.Tensor], requested: int | None, label: str
) -> int:
    """The CR the codeword layer's shape reveals, checked against `requested`."""
    entry = get_entry(name)
    if requested is not None:
        check_cr(entry, requested)
    key = entry.codeword_key
    weight = tensors.get(key)
    if weight is None:
        if requested is not None:
            return requested
        if len(entry.crs) == 1:
            return entry.crs[0]
        names_only = dict.fromkeys(_shapes(name, entry.crs[0]))  # key names do not vary by CR
        raise CheckpointError(
            f"{label} does not match {name} (it has no {key}, the codeword layer): "
            + "; ".join(_differences(names_only, tensors))
        )
    shape = tuple(weight.shape)
    fits = [c for c in entry.crs if _shapes(name, c).get(key) == shape]
    if requested is not None:
        if requested in fits or not fits:  # no fit: the strict load names the shape difference
            return requested
        raise CheckpointError(
            f"--cr {requested} conflicts with the checkpoint: {key} has {shape[0]} outputs, "
            f"i.e. CR 1/{fits[0]}"
        )
    if len(fits) == 1:
        return fits[0]
    if not fits:
        supported = ", ".join(f"1/{c}" for c in entry.crs)
        raise CheckpointError(
            f"{label}: {key} has shape {shape}, which fits no CR of {name} ({supported})"
        )
    raise CheckpointError(f"{label}: {key} fits several CRs of {name}; pass --cr")


def _strict_model(
    name: str,
    cr: int,
    tensors: Mapping[str, torch.Tensor],
    label: str,
    *,
    options: Mapping[str, Any] | None = None,
) -> CsiAutoencoder:
    """A fresh model with exactly these weights, or an error naming every difference.

    `options` are the builder options a project checkpoint recorded (e.g. LORA's quantizer).
    """
    try:
        model = build(name, cr, **dict(options or {}))
    except TypeError as error:
        raise CheckpointError(
            f"{label}: unusable build options {dict(options or {})}: {error}"
        ) from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = _differences(expected, tensors)
    if problems:
        raise CheckpointError(f"{label} does not match {name} CR 1/{cr}: " + "; ".join(problems))
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{label}: {key} holds NaN or inf")
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def _differences(
    expected: Mapping[str, tuple[int, ...] | None], tensors: Mapping[str, torch.Tensor]
) -> list[str]:
    """Missing keys, unexpected keys and shape differences, each named (None: any shape)."""
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    shapes = [
        f"{k} {tuple(tensors[k].shape)} in the file vs {shape} in the model"
        for k, shape in expected.items()
        if k in tensors and shape is not None and tuple(tensors[k].shape) != shape
    ]
    return [
        f"{what} ({len(items)}): {_listing(items)}"
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape differences", shapes),
        )
        if items
    ]


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f", ... and {more} more" if more > 0 else "")


def _shipped_cr(name: str) -> int:
    shipped = sorted(cr for model, cr in SHIPPED if model == name)
    return shipped[0] if shipped else 4


@functools.cache
def _shapes(name: str, cr: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of `build(name, cr)` (cached: name inference compares against them all)."""
    return {key: tuple(value.shape) for key, value in build(name, cr).state_dict().items()}


@functools.cache
def _signature(name: str, cr: int) -> _Signature:
    full = frozenset(_shapes(name, cr))
    entry = get_entry(name)
    flat = frozenset(_flat_name(name, k) for k in full) if entry.flat_prefixes else None
    sides = {
        side: frozenset(k[len(side) + 1 :] for k in full if k.startswith(f"{side}."))
        for side in _SIDES
    }
    return _Signature(full, flat, sides["encoder"], sides["decoder"])
