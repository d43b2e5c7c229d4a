"""COST2100 data drawn as Ray tasks (`data synth --source cost2100 --ray-address ADDR`).

A shard is one Octave batch of `cost2100_source.plan_batches(n, seed)`: its size and seed
are fixed by `n` and `seed`, so its samples do not depend on the node that drew them. Each
task runs the package's Octave driver as a separate process on its node, in a scratch folder
of that node, and returns the batch's arrays; the model's code (`--cost2100-dir`, GPL-3, not
shipped) and Octave must be at the same path on every node. Results are kept in a shard
folder beside the output (`cluster.kept`) and merged in batch order by the one COST2100
writer, so the files are byte for byte those of a run on local Octave processes.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration.cost2100_source import (
    GENERATOR_ID,
    PRESETS,
    BatchResult,
    Cost2100Preset,
    find_octave,
    model_dir,
    run_batch,
    write_cost2100_dataset,
)
from csideploy.cluster.kept import KeptShards, plan_record
from csideploy.cluster.kept import shard_folder as kept_folder
from csideploy.cluster.shards import Shard
from csideploy.cluster.store import Spec
from csideploy.errors import DataError

PREFIX = "batch"


def draw_batch(preset: Cost2100Preset, model: str, size: int, seed: int) -> dict[str, Any]:
    """One shard, on whichever node runs it: `size` samples of the batch seeded `seed`."""
    where = Path(model)
    if not (where / "cost2100.m").is_file():
        raise DataError(
            f"{model}: no cost2100.m on node {socket.gethostname()}; --cost2100-dir must hold "
            "the COST2100 model at the same path on every Ray node"
        )
    octave = find_octave()
    with tempfile.TemporaryDirectory(prefix="csideploy-cost2100-") as work:
        result = run_batch(preset, where, size, seed, Path(work), octave)
    return {
        "x": result.x,
        "hf": result.hf,
        "redraws": np.asarray(result.redraws, dtype=np.int64),
        "reruns": np.asarray(result.reruns, dtype=np.int64),
    }


def plan(
    preset: Cost2100Preset, model: Path, batches: list[tuple[int, int]]
) -> tuple[list[Shard], dict[str, Spec]]:
    """A shard per batch, named `batch-00000` ..., and the arrays each must return."""
    shards: list[Shard] = []
    specs: dict[str, Spec] = {}
    for index, (size, seed) in enumerate(batches):
        name = f"{PREFIX}-{index:05d}"
        shards.append(Shard(name, draw_batch, (preset, str(model), size, seed)))
        specs[name] = {
            "x": ((size, 2, 32, 32), "float32"),
            "hf": ((size, 32, 125), "complex64"),
            "redraws": ((), "int64"),
            "reruns": ((), "int64"),
        }
    return shards, specs


def write_sharded_cost2100(
    out_dir: str | os.PathLike[str],
    *,
    ray: Any | None,
    cost2100_dir: str | os.PathLike[str],
    scenario: str = "indoor",
    progress: bool = False,
    **options: Any,
) -> dict[str, Path]:
    """`write_cost2100_dataset` with every batch a shard on `ray` (None: here, in turn).

    Raises ShardError naming the batches that failed their retries; finished batches stay in
    the shard folder for the next run, which draws only the rest.
    """
    if scenario not in PRESETS:
        raise ValueError(f"unknown COST2100 scenario {scenario!r}; expected indoor or outdoor")
    preset, model = PRESETS[scenario], model_dir(cost2100_dir)
    holder: list[KeptShards] = []

    def batches(
        planned: list[tuple[int, int]], _work: Path, _done: Callable[[int], object]
    ) -> Iterator[BatchResult]:
        shards, specs = plan(preset, model, planned)
        kept = KeptShards(Path(out_dir), _record(preset, shards), shards, specs, ray, progress)
        holder.append(kept)
        for _shard, arrays in kept.arrays(PREFIX):
            yield BatchResult(
                arrays["x"], arrays["hf"], int(arrays["redraws"]), int(arrays["reruns"])
            )

    files = write_cost2100_dataset(
        out_dir,
        cost2100_dir=cost2100_dir,
        scenario=scenario,
        progress=False,
        batches=batches,
        **options,
    )
    for kept in holder:
        kept.remove_folder()
    return files


def _record(preset: Cost2100Preset, shards: list[Shard]) -> dict[str, Any]:
    """What decides the kept results' bytes: generator, preset, model folder, sizes, seeds."""
    return plan_record(GENERATOR_ID, asdict(preset), shards)


def shard_folder(target: Path, preset: Cost2100Preset, shards: list[Shard]) -> Path:
    """Where the batches of this exact data set are kept (see `cluster.kept.shard_folder`)."""
    return kept_folder(Path(target), _record(preset, shards))
