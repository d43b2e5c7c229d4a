"""Shard results kept as one `.npz` file per shard in a shard folder, written atomically.

A result is saved only when its arrays have the shapes and dtypes the shard promised, and a
saved file counts as finished only when it reads back (without pickle) with those shapes and
dtypes; a truncated or foreign file is simply computed again.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from csideploy.errors import DataError
from csideploy.report.markdown import write_atomic

Spec = dict[str, tuple[tuple[int, ...], str]]
"""Array name -> (shape, dtype name) that one shard's result holds."""


class ArraySink:
    """`ShardSink` for results that are dicts of numpy arrays, checked against `specs`."""

    def __init__(self, folder: Path, specs: dict[str, Spec]) -> None:
        self.folder = Path(folder)
        self.specs = specs

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.npz"

    def done(self, name: str) -> bool:
        return self.load(name) is not None

    def load(self, name: str) -> dict[str, np.ndarray] | None:
        """The saved arrays of shard `name`, or None when missing, unreadable or off-spec."""
        try:
            with np.load(self.path(name), allow_pickle=False) as saved:
                arrays = {key: saved[key] for key in saved.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None
        return arrays if _matches(arrays, self.specs[name]) else None

    def save(self, name: str, result: dict[str, np.ndarray]) -> None:
        """Keep `result` (temporary file, then a rename); DataError when off-spec."""
        if not isinstance(result, dict) or not _matches(result, self.specs[name]):
            raise DataError(f"shard {name} returned arrays that do not match its plan")
        buffer = io.BytesIO()
        np.savez(buffer, **result)
        write_atomic(self.path(name), buffer.getvalue())


def _matches(arrays: dict[str, np.ndarray], spec: Spec) -> bool:
    """Exactly the arrays of `spec`, each with its shape and dtype."""
    if set(arrays) != set(spec):
        return False
    return all(
        isinstance(arrays[key], np.ndarray)
        and arrays[key].shape == shape
        and arrays[key].dtype == np.dtype(dtype)
        for key, (shape, dtype) in spec.items()
    )
