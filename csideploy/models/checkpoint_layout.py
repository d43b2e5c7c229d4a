"""Which zoo model a state dict holds, in which key layout, at which CR; strict loading.

A checkpoint's keys are compared with every registered model's keys in four layouts (the
project's `encoder.*` / `decoder.*`, an official flat one, encoder only, decoder only); the
CR comes from the codeword layer's shape. Loading is strict: every missing, unexpected or
mis-shaped key is named, and non-finite weights are refused.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from csideploy.errors import CheckpointError
from csideploy.models.registry import CsiAutoencoder, build, check_cr, get_entry, list_models

SIDES = ("encoder", "decoder")
_MAX_LISTED = 12


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


def resolve_layout(
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
        if layout in layouts and layout not in SIDES
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


def to_project_layout(
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


def resolve_cr(
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
            + "; ".join(differences(names_only, tensors))
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


def strict_model(
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
    problems = differences(expected, tensors)
    if problems:
        raise CheckpointError(f"{label} does not match {name} CR 1/{cr}: " + "; ".join(problems))
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{label}: {key} holds NaN or inf")
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def differences(
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
        for side in SIDES
    }
    return _Signature(full, flat, sides["encoder"], sides["decoder"])
