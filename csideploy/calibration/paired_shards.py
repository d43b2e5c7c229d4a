"""Paired built-in UL/DL data generated in shards (`data synth --paired --workers N |
--ray-address A`).

A shard is `SHARD_SAMPLES` consecutive drops of one split: whole chunks of the paired
generator, each chunk drawn from its own streams (`paired.paired_chunk`), so a shard's bytes
depend only on (split seed, first chunk, size, UL carrier). Results are kept in a shard folder
beside the output (`cluster.kept`) and streamed in shard order through the one paired writer:
the files are byte for byte those of `write_paired_dataset` in one process, whatever the
number of workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration import synthetic
from csideploy.calibration.paired import (
    PAIRED_GENERATOR_ID,
    PairedBlocks,
    WrittenDataset,
    _ul_ratio,
    paired_chunk,
    write_paired_dataset,
)
from csideploy.calibration.synthetic_config import SyntheticConfig
from csideploy.calibration.synthetic_shards import shard_ranges
from csideploy.cluster.kept import KeptShards, plan_record
from csideploy.cluster.shards import Shard
from csideploy.cluster.store import Spec


def make_paired_block(
    cfg: SyntheticConfig, seed: int, start: int, size: int, ul_hz: float, with_freq: bool
) -> dict[str, np.ndarray]:
    """Drops `start` .. `start + size` of the split seeded `seed` (one shard), DL and UL."""
    ratio = _ul_ratio(cfg.name, ul_hz, cfg.carrier_hz)
    parts: dict[str, list[np.ndarray]] = {"dl": [], "ul": [], "hf": []}
    first = start // synthetic.CHUNK
    for offset in range(0, size, synthetic.CHUNK):
        count = min(synthetic.CHUNK, size - offset)
        index = first + offset // synthetic.CHUNK
        dl, ul, hf = paired_chunk(cfg, seed, index, count, ratio, with_freq)
        parts["dl"].append(dl)
        parts["ul"].append(ul)
        if hf is not None:
            parts["hf"].append(hf)
    return {key: np.concatenate(arrays) for key, arrays in parts.items() if arrays}


def plan(
    cfg: SyntheticConfig, counts: dict[str, int], seeds: dict[str, int], ul_hz: float
) -> tuple[list[Shard], dict[str, Spec]]:
    """The shards of every split in order, and the arrays each one must return."""
    shards: list[Shard] = []
    specs: dict[str, Spec] = {}
    for split, name, start, size, with_freq in shard_ranges(counts):
        args = (cfg, seeds[split], start, size, ul_hz, with_freq)
        shards.append(Shard(name, make_paired_block, args))
        csi = ((size, 2, 32, 32), "float32")
        specs[name] = {"dl": csi, "ul": csi}
        if with_freq:
            specs[name]["hf"] = ((size, 32, synthetic.N_FREQ), "complex64")
    return shards, specs


def write_sharded_paired(
    out_dir: str | os.PathLike[str], *, ray: Any | None, progress: bool = False, **options: Any
) -> WrittenDataset:
    """`write_paired_dataset(out_dir, **options)` with the drops made as shards on `ray`
    (None: here). Same files, same bytes. Raises ShardError naming the shards that failed
    their retries; the shards that finished stay in the shard folder for the next run.
    """
    holder: list[KeptShards] = []

    def blocks(
        cfg: SyntheticConfig, counts: dict[str, int], seeds: dict[str, int], ul_hz: float
    ) -> PairedBlocks:
        shards, specs = plan(cfg, counts, seeds, ul_hz)
        record = plan_record(PAIRED_GENERATOR_ID, asdict(cfg), shards)
        kept = KeptShards(Path(out_dir), record, shards, specs, ray, progress)
        holder.append(kept)
        split_of = {split_seed: split for split, split_seed in seeds.items()}

        def split_blocks(_n: int, _cfg: Any, split_seed: int, *_rest: Any) -> Iterator[Any]:
            for shard, arrays in kept.arrays(split_of[split_seed]):
                yield shard.args[2], arrays["dl"], arrays["ul"], arrays.get("hf")

        return split_blocks

    written = write_paired_dataset(out_dir, progress=False, blocks=blocks, **options)
    for kept in holder:
        kept.remove_folder()
    return written
