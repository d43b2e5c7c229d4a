"""Paired uplink / downlink CSI (same geometry, two carriers) and a bounded-memory .mat writer.

DualNet-MP's BS decodes the DL magnitude with the UL magnitude as side information, so its
data come in pairs: the same UE drop seen on the DL and the UL carrier of an FDD band.

File layout. A paired split is one COST2100-style MATLAB v5 file holding two variables:

- `HT`: the DOWNLINK CSI, float32 (N, 2048), exactly as every other data file (so every
  command that reads `HT` reads the DL and ignores the rest);
- `HT_UL`: the UPLINK CSI of the same N drops, same shape, layout and scale.

Rows are `[real 1024 | imag 1024]` of the 32 angle x 32 delay matrix, values in [0, 1] with
0.5 meaning zero; each link of each sample is scaled by its own largest component (the
released convention), so the DL is exactly what the single-link generator writes.
`load_paired(path)` returns both as (N, 2, 32, 32).

Built-in generator (`generate_paired`, `write_paired_dataset`). It reuses the synthetic
generator's clustered multipath model (`csideploy.calibration.synthetic`) and draws each
drop's clusters once: the DL is exactly `synthetic.generate(n, scenario, seed)`; the UL keeps
every path's delay and departure angle and its gain magnitude, while (i) the array response is
that of the same physical array at the UL carrier (half-wavelength spacing at the DL carrier, so
the spatial frequency of a path scales by f_UL / f_DL) and (ii) every path gets a fresh
uniform phase (over an FDD duplex gap of tens of MHz the path phases decorrelate). The
angular-delay magnitudes of the two links are therefore strongly correlated and their phases
are not. Default UL carriers follow the DualNet-MP seed's separations: 5.1 GHz UL for the
5.3 GHz indoor preset, and f_DL * 2.0 / 2.1 for the outdoor preset (its UMi band was 2.0 / 2.1
GHz).

Memory. Files are written through `mat_stream.MatStreamWriter`, a chunk of rows at a time.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from csideploy.calibration.dataset_writer import _split_counts as synthetic_split_counts
from csideploy.calibration.dataset_writer import dataset_bytes
from csideploy.calibration.mat_stream import MatStreamWriter
from csideploy.calibration.output_guard import (
    check_disk_space,
    move_into_place,
    refuse_existing,
    staged_output,
)
from csideploy.errors import DataError

UL_VARIABLE = "HT_UL"
DL_VARIABLE = "HT"
CSI_WIDTH = 2048
PAIRED_GENERATOR_ID = "csideploy.paired/1"
DEFAULT_UL_RATIO = {"indoor": 5.1 / 5.3, "outdoor": 2.0 / 2.1}
"""f_UL / f_DL of the built-in presets (DualNet-MP: 5.1 / 5.3 GHz indoor, 2.0 / 2.1 GHz UMi)."""
_UL_PHASE_STREAM = 0x0171
PairedBlocks = Callable[..., Iterable[tuple[int, np.ndarray, np.ndarray, "np.ndarray | None"]]]
"""`_paired_chunks`' arguments (n, config, seed, UL carrier Hz, progress, with HF) ->
(start, DL, UL, HF or None) in order."""
BlockPlan = Callable[[Any, dict[str, int], dict[str, int], float], PairedBlocks]
"""(config, counts by split, seeds by split, UL carrier Hz) -> where every split's chunks
come from."""

__all__ = ["MatStreamWriter", "dataset_bytes", "move_into_place", "refuse_existing"]


# --------------------------------------------------------------------------- reading


def load_paired(
    path: str | os.PathLike[str], *, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(DL, UL) CSI of a paired file, each float32 (N, 2, 32, 32), validated and same length."""
    from csideploy.calibration.io import load_csi

    dl = load_csi(path, variable=DL_VARIABLE, limit=limit)
    try:
        ul = load_csi(path, variable=UL_VARIABLE, limit=limit)
    except DataError as exc:
        raise DataError(f"{path}: not a paired UL/DL file ({exc})") from exc
    if len(dl) != len(ul):
        raise DataError(
            f"{path}: {DL_VARIABLE} has {len(dl)} samples but {UL_VARIABLE} has {len(ul)}"
        )
    return dl, ul


# --------------------------------------------------------------------------- built-in pairs


def _ul_ratio(scenario: str, ul_carrier_hz: float | None, dl_carrier_hz: float) -> float:
    if ul_carrier_hz is None:
        return DEFAULT_UL_RATIO.get(scenario, DEFAULT_UL_RATIO["outdoor"])
    if not ul_carrier_hz > 0:
        raise ValueError(f"ul_carrier_hz must be positive, got {ul_carrier_hz!r}")
    return float(ul_carrier_hz) / dl_carrier_hz


def _uplink_paths(paths: Any, ratio: float, rng: np.random.Generator) -> Any:
    """Same delays, angles and gain magnitudes; spatial frequency scaled; fresh phases."""
    from csideploy.calibration.synthetic import Paths, _off_grid

    half = 16.0  # sin(angle) is carried in units of 16 sin(angle) on the DFT grid
    phase = rng.uniform(-np.pi, np.pi, size=paths.gain.shape)
    return Paths(
        sin_angle=_off_grid(paths.sin_angle * ratio * half) / half,
        delay=paths.delay,
        gain=np.abs(paths.gain) * np.exp(1j * phase),
    )


def generate_paired(
    n: int,
    *,
    scenario: str = "indoor",
    seed: int = 0,
    ul_carrier_hz: float | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """`n` (DL, UL) pairs from the built-in generator, each float32 (n, 2, 32, 32).

    The DL equals `synthetic.generate(n, scenario=scenario, seed=seed)`; see the module
    docstring for how the UL is derived. `ul_carrier_hz` defaults per preset.
    """
    dl = np.empty((n, 2, 32, 32), dtype=np.float32)
    ul = np.empty_like(dl)
    for start, d, u, _hf in _paired_chunks(n, scenario, seed, ul_carrier_hz, progress, False):
        dl[start : start + len(d)] = d
        ul[start : start + len(u)] = u
    return dl, ul


def _paired_chunks(
    n: int,
    scenario: Any,
    seed: int,
    ul_carrier_hz: float | None,
    progress: bool,
    with_freq: bool,
) -> Any:
    """Yield (start, dl chunk, ul chunk, HF chunk or None) for `n` samples.

    Chunks and their random streams are the synthetic generator's, so the DL is identical to
    `synthetic.generate(n, scenario=..., seed=seed)`.
    """
    from csideploy.calibration import synthetic as syn

    n, seed = _check_count("n", n, 1), _check_count("seed", seed, 0)
    cfg = syn._config(scenario)
    ratio = _ul_ratio(cfg.name, ul_carrier_hz, cfg.carrier_hz)
    with progress_bar(n, progress, f"paired {cfg.name}") as bar:
        for index, start in enumerate(range(0, n, syn.CHUNK)):
            size = min(syn.CHUNK, n - start)
            dl, ul, hf = paired_chunk(cfg, seed, index, size, ratio, with_freq)
            yield start, dl, ul, hf
            bar.update(size)


def paired_chunk(
    cfg: Any, seed: int, index: int, size: int, ratio: float, with_freq: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(DL, UL, HF or None) of chunk `index` of the stream `seed`: its own random streams,
    so any chunk can be made alone (a shard) with the bytes of the whole run."""
    from csideploy.calibration import synthetic as syn

    paths = syn._draw_paths(cfg, size, syn._rng(seed, index))
    phase_rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(index, _UL_PHASE_STREAM))
    )
    dl = np.empty((size, 2, 32, 32), dtype=np.float32)
    ul = np.empty_like(dl)
    factors = syn._csi_into(dl, paths)
    syn._csi_into(ul, _uplink_paths(paths, ratio, phase_rng))
    hf = syn._freq_chunk(paths) * factors[:, None, None] if with_freq else None
    return dl, ul, hf


def _check_count(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar counting samples, or a do-nothing stand-in when `enabled` is False."""
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sample", desc=desc, disable=not enabled)


def split_counts(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Samples per split (train, val, test); each gets at least one, or a ValueError."""
    return synthetic_split_counts(_check_count("n", n, 3), val_fraction, test_fraction)


@dataclass(frozen=True)
class WrittenDataset:
    """Files written by `write_paired_dataset` / `write_sionna_dataset`, by role."""

    files: dict[str, Path]
    counts: dict[str, int]
    manifest: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = {k: str(v) for k, v in self.files.items()}
        return out

    def __str__(self) -> str:
        lines = [f"{role}: {path}" for role, path in self.files.items()]
        return "\n".join(lines)


def write_paired_dataset(
    out_dir: str | os.PathLike[str],
    *,
    scenario: str = "indoor",
    n: int = 15000,
    seed: int = 0,
    ul_carrier_hz: float | None = None,
    val_fraction: float = 0.2,
    test_fraction: float = 2 / 15,
    overwrite: bool = False,
    progress: bool = False,
    blocks: BlockPlan | None = None,
) -> WrittenDataset:
    """Write built-in paired UL/DL data in the COST2100 layout (train / val / test splits).

    Files: `DATA_H{train,val,test}{in|out}.mat` with `HT` (DL) and `HT_UL` (UL),
    `DATA_HtestF{in|out}_all.mat` (`HF_all` of the DL test split, for rho) and
    `paired_dataset.json`. Memory is bounded by one chunk (see `MatStreamWriter`).
    `blocks`: where the chunks come from (default: made here; `paired_shards` passes shard
    results, the same bytes), asked only after the output location passed its checks.
    """
    from csideploy.calibration import synthetic as syn
    from csideploy.calibration.layout import split_filename

    cfg = syn._config(scenario)
    counts = split_counts(n, val_fraction, test_fraction)
    seeds = syn.split_seeds(seed)
    ratio = _ul_ratio(cfg.name, ul_carrier_hz, cfg.carrier_hz)
    names = {s: split_filename(s, cfg.name) for s in ("train", "val", "test", "testF")}
    names["manifest"] = "paired_dataset.json"
    target = Path(out_dir)
    refuse_existing(target, names.values(), overwrite)
    with staged_output(target) as staging:  # first: an unwritable target fails here, at once
        check_disk_space(target, dataset_bytes(counts, per_split=2))
        ul_hz = ratio * cfg.carrier_hz
        source = _paired_chunks if blocks is None else blocks(cfg, counts, seeds, ul_hz)
        for split in ("train", "val", "test"):
            size = counts[split]
            shapes: dict[str, tuple[int, int, Any]] = {
                DL_VARIABLE: (size, CSI_WIDTH, np.float32),
                UL_VARIABLE: (size, CSI_WIDTH, np.float32),
            }
            freq = None
            if split == "test":
                freq = MatStreamWriter(
                    staging / names["testF"], {"HF_all": (size, 4000, np.complex64)}
                )
            with MatStreamWriter(staging / names[split], shapes) as writer:
                chunks = source(
                    size, cfg, seeds[split], ratio * cfg.carrier_hz, progress, freq is not None
                )
                for start, dl, ul, hf in chunks:
                    writer.write(DL_VARIABLE, start, dl)
                    writer.write(UL_VARIABLE, start, ul)
                    if freq is not None:
                        freq.write("HF_all", start, hf)
                writer.close()
            if freq is not None:
                freq.close()
        manifest = {
            "generator": PAIRED_GENERATOR_ID,
            "note": "synthetic stand-in data, NOT COST2100; figures are not comparable",
            "scenario": cfg.name,
            "variables": {DL_VARIABLE: "downlink CSI", UL_VARIABLE: "uplink CSI, same drops"},
            "dl_carrier_hz": cfg.carrier_hz,
            "ul_carrier_hz": ratio * cfg.carrier_hz,
            "n": n,
            "seed": seed,
            "split_seeds": seeds,
            "counts": counts,
            "files": names,
            "scaling": "per sample: x / (2 max |x|) + 0.5, each link",
            "zero_offset": 0.5,
        }
        (staging / names["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n")
        move_into_place(staging, target, names.values())
    return WrittenDataset({role: target / name for role, name in names.items()}, counts, manifest)
