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

import hashlib
import json
import os
import shutil
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
from csideploy.cluster.shards import Shard, run_shards
from csideploy.cluster.store import ArraySink, Spec

SHARD_SAMPLES = 4 * synthetic.CHUNK
"""Samples per shard: whole chunks (so shard bytes equal the single-process bytes)."""
SHARDS_PREFIX = ".csideploy-shards."
SPLITS = ("train", "val", "test")


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
    for split in SPLITS:
        with_freq = split == "test"
        for start in range(0, counts[split], SHARD_SAMPLES):
            size = min(SHARD_SAMPLES, counts[split] - start)
            name = f"{split}-{start // SHARD_SAMPLES:05d}"
            shards.append(Shard(name, make_block, (cfg, seeds[split], start, size, with_freq)))
            specs[name] = {"x": ((size, 2, synthetic.N_ANTENNAS, synthetic.N_DELAY), "float32")}
            if with_freq:
                specs[name]["hf"] = ((size, synthetic.N_ANTENNAS, synthetic.N_FREQ), "complex64")
    return shards, specs


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
    source = _ShardedBlocks(Path(out_dir), cfg, shards, specs, ray, progress)
    files = write_synthetic_dataset(
        out_dir,
        scenario=cfg,
        n=n,
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        overwrite=overwrite,
        progress=False,
        blocks=source,
    )
    source.remove_folder()
    return files


class _ShardedBlocks:
    """A `BlockSource` that runs every shard on its first call, then reads them in order."""

    def __init__(
        self,
        target: Path,
        cfg: SyntheticConfig,
        shards: list[Shard],
        specs: dict[str, Spec],
        ray: Any | None,
        progress: bool,
    ) -> None:
        self.shards, self.specs, self.ray, self.progress = shards, specs, ray, progress
        self.folder = shard_folder(target, cfg, shards)
        self.sink: ArraySink | None = None

    def __call__(self, split: str, size: int, seed: int, with_freq: bool) -> Iterator[Block]:
        if self.sink is None:  # the output location passed its checks: now do the work
            self.folder.mkdir(exist_ok=True)
            self.sink = ArraySink(self.folder, self.specs)
            run_shards(self.shards, self.sink, self.ray, progress=self.progress, desc="shards")
        for shard in self.shards:
            if shard.name.startswith(f"{split}-"):
                arrays = self.sink.load(shard.name)
                if arrays is None:  # removed or changed since it was checked
                    raise OSError(f"{self.sink.path(shard.name)}: shard result went missing")
                yield shard.args[2], arrays["x"], arrays.get("hf")

    def remove_folder(self) -> None:
        """Remove the shard folder (this module's own files) once the data set is written."""
        if self.sink is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def shard_folder(target: Path, cfg: SyntheticConfig, shards: list[Shard]) -> Path:
    """Where the shards of this exact data set are kept: beside the staging directory, named
    by a digest of everything that decides their bytes (other settings, other folder)."""
    plan_text = json.dumps(
        {
            "generator": synthetic.GENERATOR_ID,
            "config": asdict(cfg),
            "shards": [(s.name, s.args[1:]) for s in shards],
        },
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(plan_text.encode()).hexdigest()[:16]
    where = target if target.is_dir() else target.parent
    return where / f"{SHARDS_PREFIX}{target.name}.{digest}"
