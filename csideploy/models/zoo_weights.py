"""The checkpoints the package ships, read by key from `csideploy/checkpoints/zoo.json`.

The index is data beside the weights: for each (model, CR) that ships weights it names the
file, its sha256 and size, its model card, licence and source, and the NMSE measured on the
built-in test split and on COST2100-model data (`benchmarks/measure_zoo.py` writes those
figures; a test re-measures them on a subset). Nothing else in the package lists shipped files.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csideploy.errors import CheckpointError

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "checkpoints"
INDEX_NAME = "zoo.json"
INDEX_SCHEMA = "csideploy-zoo/1"


@dataclass(frozen=True)
class NmseFigure:
    """One measured NMSE of a shipped checkpoint: value, convention and what it was run on."""

    db: float
    samples: int
    convention: str
    data: str

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> NmseFigure:
        return cls(
            db=float(raw["db"]),
            samples=int(raw["samples"]),
            convention=str(raw["convention"]),
            data=str(raw["data"]),
        )


@dataclass(frozen=True)
class ShippedCheckpoint:
    """One entry of the index: a (model, CR) whose weights ship with the package."""

    model: str
    cr: int
    scenario: str
    file: str
    card: str
    sha256: str
    bytes: int
    licence: str
    source: str
    nmse: Mapping[str, NmseFigure]
    """Keyed by data source: `builtin` (built-in test split) and `cost2100` (model data)."""

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ShippedCheckpoint:
        return cls(
            model=str(raw["model"]),
            cr=int(raw["cr"]),
            scenario=str(raw["scenario"]),
            file=str(raw["file"]),
            card=str(raw["card"]),
            sha256=str(raw["sha256"]),
            bytes=int(raw["bytes"]),
            licence=str(raw["licence"]),
            source=str(raw["source"]),
            nmse={k: NmseFigure.from_json(v) for k, v in raw["nmse"].items()},
        )

    def nmse_db(self, source: str) -> float | None:
        figure = self.nmse.get(source)
        return None if figure is None else figure.db


def read_index(path: Path) -> tuple[ShippedCheckpoint, ...]:
    """The entries of an index file; a malformed index names the missing key."""
    raw = json.loads(path.read_text())
    if raw.get("schema") != INDEX_SCHEMA:
        raise CheckpointError(f"{path}: schema is {raw.get('schema')!r}, expected {INDEX_SCHEMA}")
    try:
        entries = tuple(ShippedCheckpoint.from_json(e) for e in raw["checkpoints"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: malformed entry ({error!r})") from error
    keys = [(e.model, e.cr) for e in entries]
    if len(set(keys)) != len(keys):
        raise CheckpointError(f"{path}: a (model, CR) is listed twice")
    return entries


@functools.cache
def shipped_checkpoints() -> tuple[ShippedCheckpoint, ...]:
    """Every checkpoint the package ships, in index order."""
    return read_index(CHECKPOINT_DIR / INDEX_NAME)


def find_shipped(name: str, cr: int) -> ShippedCheckpoint | None:
    """The shipped entry of (name, CR), or None."""
    return next((e for e in shipped_checkpoints() if (e.model, e.cr) == (name, cr)), None)


def shipped_crs(name: str) -> list[int]:
    """CRs of `name` that ship weights, lowest reduction first."""
    return sorted(e.cr for e in shipped_checkpoints() if e.model == name)
