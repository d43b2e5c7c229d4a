"""Writing a built-in synthetic data set: its splits, streamed, and its manifest.

Samples are generated in blocks (`synthetic.generate_blocks`) and streamed into the .mat files
(`mat_stream`), so memory stays bounded whatever `n` is. Before anything is generated the
output location is checked (`output_guard`: `--force` rules, writability, free disk space).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration import synthetic
from csideploy.calibration.mat_stream import open_mat_writer, planned_bytes
from csideploy.calibration.output_guard import (
    check_disk_space,
    move_into_place,
    refuse_existing,
    staged_output,
)
from csideploy.calibration.synthetic_config import SyntheticConfig

CSI_WIDTH = 2048
FREQ_WIDTH = 4000
MANIFEST_NAME = "synthetic_dataset.json"

Block = tuple[int, np.ndarray, "np.ndarray | None"]
BlockSource = Callable[[str, int, int, bool], Iterable[Block]]
"""(split, samples, split seed, with HF_all) -> (start, x, HF or None) blocks in order."""


def write_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    *,
    scenario: str | SyntheticConfig = "indoor",
    n: int = 15000,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 2 / 15,
    overwrite: bool = False,
    progress: bool = False,
    blocks: BlockSource | None = None,
) -> dict[str, Path]:
    """Write a synthetic data set in the exact COST2100 layout; returns the paths by role.

    Files: `DATA_H{train,val,test}{in|out}.mat` (`HT`, float32 (N, 2048)),
    `DATA_HtestF{in|out}_all.mat` (`HF_all`, complex64 (N_test, 4000)) and a manifest
    `synthetic_dataset.json` recording the generator, configuration, scaling and per-split
    seeds (disjoint, from `split_seeds`). Default fractions match COST2100's 100k/30k/20k.
    Files are written into a staging directory and moved into place. `blocks`: where the
    samples come from (default: generated here; `synthetic_shards` passes shard results,
    byte-identical), called only after the output location passed its checks.
    """
    from csideploy.calibration.layout import split_filename

    cfg = synthetic._config(scenario)
    if cfg.name not in ("indoor", "outdoor"):
        raise ValueError(f"config name {cfg.name!r} must be indoor or outdoor (it names the files)")
    counts = _split_counts(n, val_fraction, test_fraction)
    seeds = synthetic.split_seeds(seed)
    names = {s: split_filename(s, cfg.name) for s in ("train", "val", "test", "testF")}
    names["manifest"] = MANIFEST_NAME
    target = Path(out_dir)
    refuse_existing(target, names.values(), overwrite)
    with staged_output(target) as staging:  # first: an unwritable target fails here, at once
        check_disk_space(target, dataset_bytes(counts))
        if blocks is None:
            blocks = _generated(cfg, progress)
        _write_splits(staging, counts, seeds, names, blocks)
        manifest = _manifest(cfg, n=n, seed=seed, seeds=seeds, counts=counts, names=names)
        (staging / names["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n")
        move_into_place(staging, target, names.values())
    return {role: target / name for role, name in names.items()}


def dataset_bytes(counts: dict[str, int], per_split: int = 1) -> int:
    """Disk bytes a data set needs: its files (streams write in place, no temporaries)."""
    files = [
        planned_bytes({f"v{i}": (counts[s], CSI_WIDTH, np.float32) for i in range(per_split)})
        for s in ("train", "val", "test")
    ]
    files.append(planned_bytes({"HF_all": (counts["test"], FREQ_WIDTH, np.complex64)}))
    return sum(files) + (1 << 20)


def _generated(cfg: SyntheticConfig, progress: bool) -> BlockSource:
    """The default block source: `synthetic.generate_blocks` in this process."""

    def blocks(split: str, size: int, seed: int, with_freq: bool) -> Iterable[Block]:
        return synthetic.generate_blocks(
            size, scenario=cfg, seed=seed, progress=progress, return_freq=with_freq
        )

    return blocks


def _write_splits(
    staging: Path,
    counts: dict[str, int],
    seeds: dict[str, int],
    names: dict[str, str],
    blocks: BlockSource,
) -> None:
    """Generate each split with its own seed, streaming it to disk (the test split with HF_all)."""
    for split in ("train", "val", "test"):
        size = counts[split]
        with_freq = split == "test"
        with ExitStack() as stack:
            csi = stack.enter_context(
                open_mat_writer(staging / names[split], {"HT": (size, CSI_WIDTH, np.float32)})
            )
            freq = None
            if with_freq:
                shape = {"HF_all": (size, FREQ_WIDTH, np.complex64)}
                freq = stack.enter_context(open_mat_writer(staging / names["testF"], shape))
            for start, x, hf in blocks(split, size, seeds[split], with_freq):
                csi.write("HT", start, x)
                if freq is not None:
                    freq.write("HF_all", start, hf)
            csi.close()
            if freq is not None:
                freq.close()


def _split_counts(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Samples per split; every split gets at least one, or a ValueError."""
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {frac!r}")
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    counts = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    if min(counts.values()) < 1:
        raise ValueError(f"n={n} with these fractions leaves an empty split: {counts}")
    return counts


def _manifest(
    cfg: SyntheticConfig,
    *,
    n: int,
    seed: int,
    seeds: dict[str, int],
    counts: dict[str, int],
    names: dict[str, str],
) -> dict[str, Any]:
    """What a reader needs to regenerate or to refuse to compare with COST2100."""
    return {
        "generator": synthetic.GENERATOR_ID,
        "note": "synthetic stand-in data, NOT COST2100; figures are not comparable",
        "scenario": cfg.name,
        "n": n,
        "seed": seed,
        "split_seeds": seeds,
        "counts": counts,
        "files": names,
        "scaling": "per sample: x / (2 max |Re, Im|) + 0.5",
        "angle_bins": "centred (fftshift over the antenna DFT)",
        "zero_offset": 0.5,
        "hf_frequencies": "fractional subcarriers 1024*m/257, m=0..124, angle domain",
        "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
    }
