"""Built-in synthetic CSI: a seeded, vectorised stand-in for COST2100 data. NOT COST2100.

The COST2100 data sets the papers use are not redistributable, so the toolkit ships a
generator that produces data in exactly their format and convention, for calibration, smoke
tests and demos. Numbers measured on it are not comparable with published COST2100 figures;
`docs/data.md` records what trained weights score on it next to COST2100-model data.

Channel model (a simple clustered multipath model, in the spirit of COST2100/3GPP;
parameters in `synthetic_config`, draws and closed form in `synthetic_dft`):

- A base station with a 32-antenna half-wavelength ULA, a single-antenna UE, 1024 OFDM
  subcarriers spanning `bandwidth_hz` (20 MHz assumed), so one delay bin is 1/bandwidth.
- Per sample, a random number of clusters in [clusters_min, clusters_max]. A cluster has a
  mean departure angle (uniform over the sector), a mean excess delay (0 for the first
  cluster, exponential for the others), a power from an exponential power-delay profile
  with log-normal shadowing, and `subpaths` sub-paths with Laplacian angle offsets (RMS
  `angular_spread_deg`), exponential delay offsets (`intra_delay_spread_ns`) and complex
  Gaussian gains. Expected cluster powers are normalised to sum to 1 per sample.
- The first arrival is uniform in [first_arrival_min_ns, first_arrival_ns). Indoor, timing is
  synchronised to it (0-50 ns), which is why the energy sits in the first delay columns;
  outdoor it is the UE's distance over c (200-900 ns), as in COST2100's macro cells.

Spatial-frequency channel: H[n, f] = sum_p g_p e^{-j pi n sin(theta_p)} e^{-j 2pi f t_p / 1024},
with n the antenna, f the subcarrier and t_p the delay in bins. The angular-delay CSI is the
2-D DFT used by CsiNet: DFT across antennas (angle), inverse DFT across subcarriers (delay),
keeping the first 32 delay rows, with the angle bins centred (fftshift: zero angle at bin 16):
Ha[k, d] = (1/1024) sum_{n, f} H[n, f] e^{-j 2pi n(k-16)/32} e^{+j 2pi fd/1024}, k, d = 0..31.
`synthetic_dft` evaluates it in closed form (a geometric series per path and axis), far faster
than building H; `angular_delay_reference` builds H and runs the FFTs, and the tests check
that both agree.

Scaling is the released data's (`convention`): each sample's real and imaginary parts are
divided by twice the sample's largest absolute component and offset by 0.5, so every sample
reaches 0 or 1 somewhere and 0.5 means zero.

Frequency-domain CSI for rho (`HF_all`, (N, 32, 125)): the angle-domain channel (the same
centred antenna DFT) at the 125 frequencies that the rho evaluator's 257-point FFT of the
zero-padded delay axis samples, i.e. fractional subcarriers f_m = 1024 m / 257, m = 0..124,
scaled by the same per-sample factor as `x`. A perfect reconstruction therefore scores rho
close to 1 (short of it only by the energy outside the 32 kept delay rows).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, overload

import numpy as np

from csideploy.calibration.synthetic_config import PRESETS, SyntheticConfig
from csideploy.calibration.synthetic_dft import (
    N_ANTENNAS,
    N_DELAY,
    N_FREQ,
    Paths,
    _csi_into,
    _draw_paths,
    _freq_chunk,
    _off_grid,
    _rng,
    angular_delay_reference,
)

__all__ = [
    "CHUNK",
    "PRESETS",
    "Paths",
    "SyntheticConfig",
    "_csi_into",
    "_draw_paths",
    "_freq_chunk",
    "_off_grid",
    "_rng",
    "angular_delay_reference",
    "default_calibration",
    "default_evaluation",
    "delay_energy_profile",
    "generate",
    "generate_blocks",
    "split_seeds",
]

CHUNK = 256
"""Samples generated per chunk. Fixed: output bytes depend on it, not on memory or threads."""
BLOCK = 8 * CHUNK
"""Samples per block of `generate_blocks` (16 MiB of CSI, 64 MiB of HF_all): what a streaming
writer holds in memory."""

GENERATOR_ID = "csideploy.synthetic/2"
"""/2: released convention (per-sample scaling, centred angle bins); /1 scaled per data set."""
CALIBRATION_SEED = 1001
EVALUATION_SEED = 2002


def _config(scenario: str | SyntheticConfig) -> SyntheticConfig:
    return scenario if isinstance(scenario, SyntheticConfig) else SyntheticConfig.preset(scenario)


@overload
def generate(
    n: int,
    *,
    scenario: str | SyntheticConfig = ...,
    seed: int = ...,
    progress: bool = ...,
    return_freq: Literal[False] = ...,
    workers: int | None = ...,
) -> np.ndarray: ...


@overload
def generate(
    n: int,
    *,
    scenario: str | SyntheticConfig = ...,
    seed: int = ...,
    progress: bool = ...,
    return_freq: Literal[True],
    workers: int | None = ...,
) -> tuple[np.ndarray, np.ndarray]: ...


def generate(
    n: int,
    *,
    scenario: str | SyntheticConfig = "indoor",
    seed: int = 0,
    progress: bool = False,
    return_freq: bool = False,
    workers: int | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """`n` synthetic CSI samples, float32 (n, 2, 32, 32) in the COST2100 convention.

    `scenario` is `indoor`, `outdoor` or a `SyntheticConfig`. The same `seed` gives identical
    bytes whatever `workers` is: each chunk of `CHUNK` samples has its own seeded stream and
    its own slice of the output, and chunks run on `workers` threads (numpy releases the GIL;
    default: the CPUs this process may use, at most 8). With `return_freq`, also the matching
    `HF_all`-style complex64 (n, 32, 125) for rho (see the module docstring).
    """
    n, seed, workers, cfg = _checked(n, seed, workers, scenario)
    x = np.empty((n, 2, N_ANTENNAS, N_DELAY), dtype=np.float32)
    hf = np.empty((n, N_ANTENNAS, N_FREQ), dtype=np.complex64) if return_freq else None
    with _progress_bar(n, progress, cfg.name) as bar:
        _fill(cfg, seed, 0, x, hf, workers, bar.update)
    return (x, hf) if hf is not None else x


def generate_blocks(
    n: int,
    *,
    scenario: str | SyntheticConfig = "indoor",
    seed: int = 0,
    progress: bool = False,
    return_freq: bool = False,
    workers: int | None = None,
    block: int = BLOCK,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """Yield (start, x, HF or None) blocks of `block` samples: `generate` in bounded memory.

    The blocks concatenated are byte for byte `generate(n, ...)` with the same arguments
    (blocks are whole chunks, each with its own stream), so a writer can stream any `n`.
    `block` is rounded up to whole chunks.
    """
    block = -(-_check_count("block", block, 1) // CHUNK) * CHUNK
    n, seed, workers, cfg = _checked(n, seed, workers, scenario)
    with _progress_bar(n, progress, cfg.name) as bar:
        for start in range(0, n, block):
            size = min(block, n - start)
            x = np.empty((size, 2, N_ANTENNAS, N_DELAY), dtype=np.float32)
            hf = np.empty((size, N_ANTENNAS, N_FREQ), dtype=np.complex64) if return_freq else None
            _fill(cfg, seed, start // CHUNK, x, hf, workers, bar.update)
            yield start, x, hf


def _checked(
    n: int, seed: int, workers: int | None, scenario: str | SyntheticConfig
) -> tuple[int, int, int, SyntheticConfig]:
    """The arguments of `generate` checked (ValueError naming the bad one), workers defaulted."""
    n, seed = _check_count("n", n, 1), _check_count("seed", seed, 0)
    workers = _default_workers() if workers is None else _check_count("workers", workers, 1)
    return n, seed, workers, _config(scenario)


def _fill(
    cfg: SyntheticConfig,
    seed: int,
    first_chunk: int,
    x: np.ndarray,
    hf: np.ndarray | None,
    workers: int,
    done: Callable[[int], object],
) -> None:
    """Fill `x` (and `hf`) with chunks `first_chunk`, `first_chunk` + 1, ... of `seed`."""
    n = len(x)

    def run(index: int) -> int:
        start = index * CHUNK
        stop = min(start + CHUNK, n)
        paths = _draw_paths(cfg, stop - start, _rng(seed, first_chunk + index))
        factors = _csi_into(x[start:stop], paths)
        if hf is not None:
            hf[start:stop] = _freq_chunk(paths) * factors[:, None, None]
        return stop - start

    chunks = range(-(-n // CHUNK))
    threads = min(workers, len(chunks))
    if threads <= 1:
        for index in chunks:
            done(run(index))
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for count in pool.map(run, chunks):
            done(count)


def _check_count(name: str, value: Any, minimum: int) -> int:
    """`value` as an int >= `minimum`, or a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _default_workers() -> int:
    """The CPUs this process may run on (its affinity where the OS reports it), at most 8."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, min(count, 8))


class _NoBar:
    """A do-nothing stand-in for tqdm when progress is off."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, _n: int) -> None:
        return None


def _progress_bar(total: int, enabled: bool, name: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="sample", desc=f"synthetic {name}")


def default_calibration(n: int = 1000, seed: int = CALIBRATION_SEED) -> np.ndarray:
    """Synthetic indoor CSI for INT8 calibration (seed disjoint from `default_evaluation`)."""
    return generate(n, scenario="indoor", seed=seed)


def default_evaluation(n: int = 2000, seed: int = EVALUATION_SEED) -> np.ndarray:
    """Synthetic indoor CSI for numerics gates and NMSE (seed disjoint from calibration)."""
    return generate(n, scenario="indoor", seed=seed)


def split_seeds(seed: int) -> dict[str, int]:
    """Disjoint per-split seeds derived from one data-set seed (train, val, test)."""
    seq = np.random.SeedSequence(int(seed), spawn_key=(0x5EED,))
    states = seq.generate_state(3, dtype=np.uint64) >> np.uint64(1)  # keep them int63
    return {split: int(s) for split, s in zip(("train", "val", "test"), states, strict=True)}


def delay_energy_profile(x: np.ndarray) -> np.ndarray:
    """Share of the energy of (x - 0.5) in each delay column (last axis), (32,), sums to 1."""
    centred = np.asarray(x, dtype=np.float64) - 0.5
    energy = (centred**2).sum(axis=tuple(range(centred.ndim - 1)))
    return energy / energy.sum()
