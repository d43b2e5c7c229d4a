"""A Sionna (3GPP TR 38.901) data set generated in shards (`data synth --source sionna
--workers N | --ray-address A`).

A shard is `chunk` drops of one split drawn from their own seeded stream (the shard's seed
derives from the split's seed and the shard's index), so its bytes do not depend on which
worker ran it, nor on how many there were. This is not the single-process layout, where each
split is one stream of `chunk`-drop steps: the sharded files are the same for any number of
workers, and differ from a run without `--workers` / `--ray-address`. The manifest records
which (`sharding`). Results are kept as for the built-in source (`cluster.kept`) and merged
in shard order by the one Sionna data-set writer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration.sionna_dataset import PartSource, write_sionna_dataset
from csideploy.calibration.sionna_source import (
    DEFAULT_CHUNK,
    GENERATOR_ID,
    GRID,
    N_FREQ,
    SionnaChunk,
    SionnaConfig,
    sionna_chunks,
)
from csideploy.cluster.kept import KeptShards, plan_record
from csideploy.cluster.shards import Shard
from csideploy.cluster.store import Spec

SPLITS = ("train", "val", "test")
SHARD_SEEDS = "per shard: SeedSequence(split seed, spawn_key=(shard index,)), first uint32"


def shard_seed(split_seed: int, index: int) -> int:
    """The seed of shard `index` of a split: independent streams, fixed by the split seed."""
    state = np.random.SeedSequence(int(split_seed), spawn_key=(index,)).generate_state(1)
    return int(state[0])


def make_part(config: SionnaConfig, seed: int, size: int, with_freq: bool) -> dict[str, np.ndarray]:
    """One shard: `size` drops from the stream of `seed`, as arrays for the shard folder."""
    (part,) = sionna_chunks(size, config, seed=seed, chunk=size, with_freq=with_freq)
    arrays = {
        "dl": part.dl.reshape(size, 2, GRID, GRID),
        "norm": np.asarray(part.norm, dtype=np.float64).reshape(size),
    }
    if part.ul is not None:
        arrays["ul"] = part.ul.reshape(size, 2, GRID, GRID)
    if part.hf is not None:
        arrays["hf"] = part.hf.reshape(size, GRID, N_FREQ)
    return arrays


def plan(
    config: SionnaConfig, counts: dict[str, int], seeds: dict[str, int], chunk: int
) -> tuple[list[Shard], dict[str, Spec]]:
    """Every split's shards in order (args: config, seed, size, with_freq, start)."""
    shards: list[Shard] = []
    specs: dict[str, Spec] = {}
    for split in SPLITS:
        with_freq = split == "test"
        for index, start in enumerate(range(0, counts[split], chunk)):
            size = min(chunk, counts[split] - start)
            name = f"{split}-{index:05d}"
            seed = shard_seed(seeds[split], index)
            shards.append(Shard(name, make_part, (config, seed, size, with_freq)))
            spec: Spec = {"dl": ((size, 2, GRID, GRID), "float32"), "norm": ((size,), "float64")}
            if config.paired_ul_dl is not None:
                spec["ul"] = ((size, 2, GRID, GRID), "float32")
            if with_freq:
                spec["hf"] = ((size, GRID, N_FREQ), "complex64")
            specs[name] = spec
    return shards, specs


def write_sharded_sionna(
    out_dir: str | os.PathLike[str],
    *,
    ray: Any | None,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = False,
    **options: Any,
) -> Any:
    """`write_sionna_dataset(out_dir, **options)` with the drops made as shards on `ray`."""
    holder: list[KeptShards] = []

    def parts(config: SionnaConfig, counts: dict[str, int], seeds: dict[str, int]) -> PartSource:
        shards, specs = plan(config, counts, seeds, chunk)
        record = plan_record(GENERATOR_ID, config.as_dict(), shards)
        kept = KeptShards(Path(out_dir), record, shards, specs, ray, progress)
        holder.append(kept)
        return lambda split, _size, _seed, _freq: _chunks(kept, split)

    sharding = {"sharding": {"drops_per_shard": chunk, "seeds": SHARD_SEEDS}}
    written = write_sionna_dataset(
        out_dir, chunk=chunk, progress=False, parts=parts, manifest_extra=sharding, **options
    )
    for kept in holder:
        kept.remove_folder()
    return written


def _chunks(kept: KeptShards, split: str) -> Iterator[SionnaChunk]:
    """A split's shards as the writer's chunks, at their offsets in the split."""
    start = 0
    for _shard, arrays in kept.arrays(split):
        size = len(arrays["dl"])
        yield SionnaChunk(start, arrays["dl"], arrays.get("ul"), arrays["norm"], arrays.get("hf"))
        start += size
