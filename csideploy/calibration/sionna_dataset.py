"""Writing a 3GPP TR 38.901 data set from `sionna_source` drops in the COST2100 layout.

Memory: one chunk of `chunk` drops at a time (Sionna's tensors for that chunk plus the
32 x 1024 frequency response), written incrementally through `MatStreamWriter`; 100,000
drops need 100,000 * 8 KiB of temporary disk per variable, not of memory. Speed on two
(shared) CPU cores: about 20 ms per UMa drop, 50 ms per paired UMi drop, plus ~10 s to import
Sionna; 100,000 drops take about half an hour (a CUDA device, if Sionna sees one, is faster).

Output layout: like `write_synthetic_dataset`, splits `DATA_H{train,val,test}out.mat`
(3GPP scenarios are outdoor, so every command's `outdoor` file names resolve), the test split's
`DATA_HtestFout_all.mat` (`HF_all`: the angle-domain channel at the 125 fractional subcarriers
1024 m / 257 the rho evaluator samples, scaled like `HT`) and `sionna_dataset.json`.

`write_sionna_dataset(parts=...)` takes the drops from elsewhere: `sionna_shards` passes
shard results made on Ray (or in this process), one seeded stream per shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration.output_guard import check_disk_space, staged_output
from csideploy.calibration.paired import (
    DL_VARIABLE,
    UL_VARIABLE,
    MatStreamWriter,
    WrittenDataset,
    dataset_bytes,
    move_into_place,
    refuse_existing,
    split_counts,
)
from csideploy.calibration.sionna_source import (
    DEFAULT_CHUNK,
    GENERATOR_ID,
    GRID,
    N_FREQ,
    NORM_VARIABLE,
    SionnaChunk,
    SionnaConfig,
    import_sionna,
    sionna_chunks,
)

PartSource = Callable[[str, int, int, bool], Iterable[SionnaChunk]]
"""(split, drops, split seed, with HF_all) -> the split's chunks in order."""
PartFactory = Callable[[SionnaConfig, dict[str, int], dict[str, int]], PartSource]
"""(config, counts, split seeds) -> the part source, called once the output passed its checks."""


def write_sionna_dataset(
    out_dir: str | os.PathLike[str],
    *,
    scenario: str = "uma",
    los: bool | None = False,
    n: int = 15000,
    seed: int = 0,
    carrier_ghz: float = 3.5,
    subcarriers: int = 1024,
    spacing_khz: float = 30.0,
    antennas: int = GRID,
    keep_delay: int = GRID,
    ue_speed_kmh: float = 6.0,
    chunk: int = DEFAULT_CHUNK,
    progress: bool = True,
    paired_ul_dl: tuple[float, float] | None = None,
    array: str = "ula",
    indoor_probability: float = 0.0,
    val_fraction: float = 0.2,
    test_fraction: float = 2 / 15,
    overwrite: bool = False,
    parts: PartFactory | None = None,
    manifest_extra: dict[str, Any] | None = None,
) -> WrittenDataset:
    """Write 38.901 CSI as `DATA_H{train,val,test}out.mat` (+ testF, + manifest) in `out_dir`.

    Each split file holds `HT` (N, 2048) float32 in [0, 1] (DL), `HT_norm` (N, 1) and, with
    `paired_ul_dl=(f_UL, f_DL)` GHz, `HT_UL`. Splits have disjoint seeds derived from `seed`.
    Files are staged in a temporary directory beside `out_dir` and moved into place.
    Raises MissingDependencyError without the `sionna` extra. `parts`: where the drops come
    from (default: `sionna_chunks` here, one stream per split); `manifest_extra`: recorded too.
    """
    from csideploy.calibration.layout import split_filename
    from csideploy.calibration.synthetic import split_seeds

    config = SionnaConfig(
        scenario=scenario,
        los=los,
        carrier_ghz=carrier_ghz,
        subcarriers=subcarriers,
        spacing_khz=spacing_khz,
        antennas=antennas,
        keep_delay=keep_delay,
        ue_speed_kmh=ue_speed_kmh,
        array=array,
        indoor_probability=indoor_probability,
        paired_ul_dl=paired_ul_dl,
    )
    sn = import_sionna()  # fail before touching the disk
    counts = split_counts(n, val_fraction, test_fraction)
    seeds = split_seeds(seed)
    names = {s: split_filename(s, "outdoor") for s in ("train", "val", "test", "testF")}
    names["manifest"] = "sionna_dataset.json"
    target = Path(out_dir)
    refuse_existing(target, names.values(), overwrite)
    with staged_output(target) as staging:  # an unwritable target fails here, at once
        check_disk_space(target, dataset_bytes(counts, per_split=3))
        source = (parts or _default_parts(chunk, progress))(config, counts, seeds)
        for split in ("train", "val", "test"):
            _write_split(staging, names, split, counts[split], seeds[split], config, source)
        manifest = {
            "generator": GENERATOR_ID,
            "source": f"sionna {sn.version}, 3GPP TR 38.901 {config.scenario.upper()}",
            "config": config.as_dict(),
            "dl_carrier_hz": config.dl_carrier_hz,
            "ul_carrier_hz": config.ul_carrier_hz,
            "variables": {
                DL_VARIABLE: "downlink CSI, 0.5 + 0.5 * Ha / HT_norm",
                NORM_VARIABLE: "per-sample Frobenius norm of the kept Ha (shared by DL and UL)",
                **({UL_VARIABLE: "uplink CSI, same drops"} if config.paired_ul_dl else {}),
            },
            "n": n,
            "seed": seed,
            "chunk": chunk,
            "split_seeds": seeds,
            "counts": counts,
            "files": names,
            "zero_offset": 0.5,
            "hf_frequencies": "subcarrier index 1024*m/257, m=0..124, angle domain",
            **(manifest_extra or {}),
        }
        (staging / names["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n")
        move_into_place(staging, target, names.values())
    return WrittenDataset({role: target / name for role, name in names.items()}, counts, manifest)


def _default_parts(chunk: int, progress: bool) -> PartFactory:
    """The default: each split one seeded stream of `chunk`-drop steps, in this process."""
    return lambda config, _counts, _seeds: _streamed(config, chunk, progress)


def _streamed(config: SionnaConfig, chunk: int, progress: bool) -> PartSource:
    """Parts from `sionna_chunks`, one stream per split seed."""

    def parts(split: str, size: int, seed: int, with_freq: bool) -> Iterable[SionnaChunk]:
        return sionna_chunks(
            size,
            config,
            seed=seed,
            chunk=chunk,
            progress=progress,
            with_freq=with_freq,
            desc=f"sionna {config.scenario} {split}",
        )

    return parts


def _write_split(
    staging: Path,
    names: dict[str, str],
    split: str,
    size: int,
    seed: int,
    config: SionnaConfig,
    parts: PartSource,
) -> None:
    """Stream one split's parts into its file (and the test split's HF_all)."""
    shapes: dict[str, tuple[int, int, Any]] = {
        DL_VARIABLE: (size, 2 * GRID * GRID, np.float32),
        NORM_VARIABLE: (size, 1, np.float64),
    }
    if config.paired_ul_dl is not None:
        shapes[UL_VARIABLE] = (size, 2 * GRID * GRID, np.float32)
    with_freq = split == "test"
    freq = (
        MatStreamWriter(staging / names["testF"], {"HF_all": (size, GRID * N_FREQ, np.complex64)})
        if with_freq
        else None
    )
    try:
        with MatStreamWriter(staging / names[split], shapes) as writer:
            for part in parts(split, size, seed, with_freq):
                writer.write(DL_VARIABLE, part.start, part.dl)
                writer.write(NORM_VARIABLE, part.start, part.norm[:, None])
                if part.ul is not None:
                    writer.write(UL_VARIABLE, part.start, part.ul)
                if freq is not None and part.hf is not None:
                    freq.write("HF_all", part.start, part.hf)
            writer.close()
        if freq is not None:
            freq.close()
    finally:
        if freq is not None:
            freq.abort()
