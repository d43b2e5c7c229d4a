"""The built-in data set generated in shards (`data synth --workers N | --ray-address A`).

A shard is `SHARD_SAMPLES` consecutive samples of one split: whole chunks of `CHUNK`, each
chunk drawn from its own seeded stream (`synthetic._fill`), so a shard's bytes depend only on
(split seed, first chunk, size), never on which worker ran it. Results are kept in a shard
folder next to the output (one `.npz` per shard); the merge streams them in shard order
through the one data-set writer, so the files are byte for byte those of a single-process
`write_synthetic_dataset` with the same options, whatever the number of workers. A rerun
after a failure reuses every kept shard; the folder is removed once the data set is written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration import synthetic
from csideploy.calibration.dataset_writer import (
    Block,
    _split_counts,
    write_synthetic_dataset,
)
from csideploy.calibration.synthetic_config import SyntheticConfig
from csideploy.cluster.kept import SHARDS_PREFIX, KeptShards, plan_record
from csideploy.cluster.kept import shard_folder as kept_folder
from csideploy.cluster.shards import Shard
from csideploy.cluster.store import Spec

SHARD_SAMPLES = 4 * synthetic.CHUNK
"""Samples per shard: whole chunks (so shard bytes equal the single-process bytes)."""
SPLITS = ("train", "val", "test")
__all__ = [
    "SHARDS_PREFIX",
    "make_block",
    "plan",
    "shard_folder",
    "shard_ranges",
    "write_sharded_synthetic",
]


def make_block(
    cfg: SyntheticConfig, seed: int, start: int, size: int, with_freq: bool
) -> dict[str, np.ndarray]:
    """Samples `start` .. `start + size` of the split whose seed is `seed` (one shard)."""
    x = np.empty((size, 2, synthetic.N_ANTENNAS, synthetic.N_DELAY), dtype=np.float32)
    hf = None
    if with_freq:
        hf = np.empty((size, synthetic.N_ANTENNAS, synthetic.N_FREQ), dtype=np.complex64)
    synthetic._fill(cfg, seed, start // synthetic.CHUNK, x, hf, 1, lambda _n: None)
    return {"x": x} if hf is None else {"x": x, "hf": hf}


def plan(
    cfg: SyntheticConfig, counts: dict[str, int], seeds: dict[str, int]
) -> tuple[list[Shard], dict[str, Spec]]:
    """The shards of every split in order, and the arrays each one must return."""
    shards: list[Shard] = []
    specs: dict[str, Spec] = {}
    for split, name, start, size, with_freq in shard_ranges(counts):
        shards.append(Shard(name, make_block, (cfg, seeds[split], start, size, with_freq)))
        specs[name] = {"x": ((size, 2, synthetic.N_ANTENNAS, synthetic.N_DELAY), "float32")}
        if with_freq:
            specs[name]["hf"] = ((size, synthetic.N_ANTENNAS, synthetic.N_FREQ), "complex64")
    return shards, specs


def shard_ranges(counts: dict[str, int]) -> Iterator[tuple[str, str, int, int, bool]]:
    """(split, shard name, first sample, samples, with HF_all) of every shard, in order:
    whole chunks per shard, so any built-in generator's shard bytes equal its own run's."""
    for split in SPLITS:
        for start in range(0, counts[split], SHARD_SAMPLES):
            size = min(SHARD_SAMPLES, counts[split] - start)
            yield split, f"{split}-{start // SHARD_SAMPLES:05d}", start, size, split == "test"


def write_sharded_synthetic(
    out_dir: str | os.PathLike[str],
    *,
    ray: Any | None,
    scenario: str | SyntheticConfig = "indoor",
    n: int = 15000,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 2 / 15,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """`write_synthetic_dataset` with the samples made as shards on `ray` (None: here).

    Same files, same bytes. Raises ShardError naming the shards that failed their retries;
    the shards that finished stay in the shard folder for the next run.
    """
    cfg = synthetic._config(scenario)
    counts = _split_counts(n, val_fraction, test_fraction)
    seeds = synthetic.split_seeds(seed)
    shards, specs = plan(cfg, counts, seeds)
    kept = KeptShards(Path(out_dir), _plan_record(cfg, shards), shards, specs, ray, progress)

    def blocks(split: str, size: int, seed: int, with_freq: bool) -> Iterator[Block]:
        for shard, arrays in kept.arrays(split):
            yield shard.args[2], arrays["x"], arrays.get("hf")

    files = write_synthetic_dataset(
        out_dir,
        scenario=cfg,
        n=n,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        overwrite=overwrite,
        progress=False,
        blocks=blocks,
    )
    kept.remove_folder()
    return files


def _plan_record(cfg: SyntheticConfig, shards: list[Shard]) -> dict[str, Any]:
    """What decides the shards' bytes (names the shard folder)."""
    return plan_record(synthetic.GENERATOR_ID, asdict(cfg), shards)


def shard_folder(target: Path, cfg: SyntheticConfig, shards: list[Shard]) -> Path:
    """Where the shards of this exact data set are kept (see `cluster.kept.shard_folder`)."""
    return kept_folder(Path(target), _plan_record(cfg, shards))
