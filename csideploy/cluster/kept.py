"""Shard results kept on disk until the merge: run every shard once, read them in order.

A data-set writer asks for its samples split by split, after it has checked the output
location; `KeptShards.arrays(split)` runs all shards on the first request (those kept from
an earlier run are not run again) and then reads each split's shards in shard order. The
folder is named by a digest of everything that decides the shards' bytes, so a run with
other settings never picks up these results.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.cluster.shards import Shard, run_shards
from csideploy.cluster.store import ArraySink, Spec

SHARDS_PREFIX = ".csideploy-shards."


class KeptShards:
    """The shards of one data set, their results in a folder beside the output."""

    def __init__(
        self,
        target: Path,
        plan: dict[str, Any],
        shards: list[Shard],
        specs: dict[str, Spec],
        ray: Any | None,
        progress: bool,
    ) -> None:
        self.shards, self.specs, self.ray, self.progress = shards, specs, ray, progress
        self.folder = shard_folder(Path(target), plan)
        self.sink: ArraySink | None = None

    def arrays(self, split: str) -> Iterator[tuple[Shard, dict[str, np.ndarray]]]:
        """(shard, its arrays) for every shard named `<split>-...`, in shard order."""
        if self.sink is None:  # the output location passed its checks: now do the work
            self.folder.mkdir(exist_ok=True)
            self.sink = ArraySink(self.folder, self.specs)
            run_shards(self.shards, self.sink, self.ray, progress=self.progress, desc="shards")
        for shard in self.shards:
            if shard.name.startswith(f"{split}-"):
                arrays = self.sink.load(shard.name)
                if arrays is None:  # removed or changed since it was checked
                    raise OSError(f"{self.sink.path(shard.name)}: shard result went missing")
                yield shard, arrays

    def remove_folder(self) -> None:
        """Remove the shard folder (only this module's files) once the data set is written."""
        if self.sink is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def shard_folder(target: Path, plan: dict[str, Any]) -> Path:
    """Beside the staging directory (inside `target` when it exists), named by the digest
    of `plan` (generator, configuration, shard names, seeds and sizes)."""
    text = json.dumps(plan, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    where = target if target.is_dir() else target.parent
    return where / f"{SHARDS_PREFIX}{target.name}.{digest}"


def plan_record(generator: str, config: Any, shards: list[Shard]) -> dict[str, Any]:
    """What decides a data set's shard bytes (it names the shard folder): the generator, its
    configuration, and every shard's name and arguments after the first (the configuration)."""
    return {
        "generator": generator,
        "config": config,
        "shards": [(s.name, s.args[1:]) for s in shards],
    }
