"""Built-in synthetic CSI: a seeded, vectorised stand-in for COST2100 data. NOT COST2100.

The COST2100 data sets the papers use are not redistributable, so the toolkit ships a
generator that produces data in exactly their format, for calibration, smoke tests and demos.
Numbers measured on it are not comparable with published COST2100 figures.

Channel model (a simple clustered multipath model, in the spirit of COST2100/3GPP):

- A base station with a 32-antenna half-wavelength ULA, a single-antenna UE, 1024 OFDM
  subcarriers spanning `bandwidth_hz` (20 MHz assumed), so one delay bin is 1/bandwidth.
- Per sample, a random number of clusters in [clusters_min, clusters_max]. A cluster has a
  mean departure angle (uniform over the sector), a mean excess delay (0 for the first
  cluster, exponential for the others), a power from an exponential power-delay profile
  with log-normal shadowing, and `subpaths` sub-paths with Laplacian angle offsets (RMS
  `angular_spread_deg`), exponential delay offsets (`intra_delay_spread_ns`) and complex
  Gaussian gains. Expected cluster powers are normalised to sum to 1 per sample.
- The first arrival is uniform in [0, first_arrival_ns): timing is synchronised to it, which
  is why the energy sits in the first delay rows.

Spatial-frequency channel: H[n, f] = sum_p g_p e^{-j pi n sin(theta_p)} e^{-j 2pi f t_p / 1024},
with n the antenna, f the subcarrier and t_p the delay in bins. The angular-delay CSI is the
2-D DFT used by CsiNet: DFT across antennas (angle), inverse DFT across subcarriers (delay),
keeping the first 32 delay rows:
Ha[k, d] = (1/1024) sum_{n, f} H[n, f] e^{-j 2pi nk/32} e^{+j 2pi fd/1024}, k, d = 0..31.

Building H (32 x 1024 per sample) and running FFTs would cost far more than the 20,000
samples/s the toolkit needs, so `generate` evaluates the same 2-D DFT in closed form: each
path's DFT across antennas and across subcarriers is a geometric series, whose sum is a
per-path factor, times a per-bin factor, over a (path, bin) denominator. Ha is then one small
real matrix product per sample. `angular_delay_reference` builds H explicitly and runs the
FFTs; the tests check that both agree.

Scaling follows COST2100 practice: one scale per data set (not per sample), so that
x = scale * [Re Ha, Im Ha] + 0.5 fits in [0, 1]; values beyond are clipped. The scale is fixed
by the configuration (`SyntheticConfig.scale`, by default calibrated once on a fixed reference
batch), so train, validation and test splits share it.

Frequency-domain CSI for rho (`HF_all`, (N, 32, 125)): the angle-domain channel (the same
antenna DFT) at the 125 frequencies that the rho evaluator's 257-point FFT of the zero-padded
delay axis samples, i.e. fractional subcarriers f_m = 1024 m / 257, m = 0..124 (about every 4th
subcarrier of the lower half of the band), scaled like `x`. A perfect reconstruction therefore
scores rho close to 1 (short of it only by the energy outside the 32 kept delay rows).
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from csideploy.errors import OutputExistsError

N_ANTENNAS = 32
N_SUBCARRIERS = 1024
N_DELAY = 32
N_FREQ = 125
RHO_FFT = 257
CHUNK = 256
"""Samples generated per chunk. Fixed: output bytes depend on it, not on memory or threads."""

GENERATOR_ID = "csideploy.synthetic/1"
CALIBRATION_SEED = 1001
EVALUATION_SEED = 2002
_SCALE_SEED = 7
_SCALE_SAMPLES = 4096
_NUDGE = 1e-6
"""Smallest distance a path keeps from a DFT grid point (in bins), so the closed form is exact."""


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the clustered multipath model (see the module docstring).

    `scale` is the data-set scale (x = scale * Ha + 0.5); left as None it is calibrated from a
    fixed reference batch of this configuration, so it is the same for every split.
    """

    name: str = "custom"
    carrier_hz: float = 5.3e9
    bandwidth_hz: float = 20e6
    clusters_min: int = 2
    clusters_max: int = 4
    subpaths: int = 10
    sector_deg: float = 120.0
    angular_spread_deg: float = 4.0
    cluster_delay_ns: float = 25.0
    intra_delay_spread_ns: float = 5.0
    pdp_decay_ns: float = 20.0
    shadowing_db: float = 3.0
    first_arrival_ns: float = 50.0
    scale: float | None = None

    def __post_init__(self) -> None:
        self._validate()
        if self.scale is None:
            object.__setattr__(self, "scale", _calibrated_scale(replace(self, scale=1.0)))

    def _validate(self) -> None:
        """ValueError naming the first field out of its range."""
        positive = ("carrier_hz", "bandwidth_hz", "sector_deg", "pdp_decay_ns")
        non_negative = (
            "angular_spread_deg",
            "cluster_delay_ns",
            "intra_delay_spread_ns",
            "shadowing_db",
            "first_arrival_ns",
        )
        for name in positive:
            _check_number(name, getattr(self, name), strictly_positive=True)
        for name in non_negative:
            _check_number(name, getattr(self, name), strictly_positive=False)
        for name in ("clusters_min", "clusters_max", "subpaths"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"SyntheticConfig.{name} must be an integer >= 1, got {value!r}")
        if self.clusters_min > self.clusters_max:
            raise ValueError(
                f"SyntheticConfig.clusters_min ({self.clusters_min}) exceeds "
                f"clusters_max ({self.clusters_max})"
            )
        if self.sector_deg > 180.0:
            raise ValueError(f"SyntheticConfig.sector_deg must be <= 180, got {self.sector_deg}")
        if self.scale is not None:
            _check_number("scale", self.scale, strictly_positive=True)

    @classmethod
    def preset(cls, name: str) -> SyntheticConfig:
        """The `indoor` (5.3 GHz picocell) or `outdoor` (300 MHz rural) preset."""
        key = {"in": "indoor", "out": "outdoor"}.get(name.lower(), name.lower())
        if key not in PRESETS:
            raise ValueError(f"unknown synthetic scenario {name!r}; expected indoor or outdoor")
        return _preset(key)

    @property
    def paths(self) -> int:
        """Sub-paths per sample, inactive clusters included (they carry zero power)."""
        return self.clusters_max * self.subpaths

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_number(name: str, value: Any, *, strictly_positive: bool) -> None:
    """ValueError unless `value` is a finite real number > 0 (or >= 0)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > 0 if strictly_positive else value >= 0)
    if not ok:
        bound = "> 0" if strictly_positive else ">= 0"
        raise ValueError(f"SyntheticConfig.{name} must be a finite number {bound}, got {value!r}")


PRESETS: dict[str, dict[str, Any]] = {
    # 5.3 GHz indoor picocell: few clusters, tens of ns of delay spread -> first delay rows.
    "indoor": {
        "name": "indoor",
        "carrier_hz": 5.3e9,
        "clusters_min": 2,
        "clusters_max": 4,
        "subpaths": 10,
        "sector_deg": 120.0,
        "angular_spread_deg": 4.0,
        "cluster_delay_ns": 25.0,
        "intra_delay_spread_ns": 5.0,
        "pdp_decay_ns": 20.0,
        "shadowing_db": 3.0,
        "first_arrival_ns": 50.0,
        "scale": 0.009708,  # = _calibrated_scale of this preset, to 4 significant digits
    },
    # 300 MHz rural: more clusters, wider angular spread, longer delays -> far less sparse.
    "outdoor": {
        "name": "outdoor",
        "carrier_hz": 300e6,
        "clusters_min": 4,
        "clusters_max": 8,
        "subpaths": 8,
        "sector_deg": 120.0,
        "angular_spread_deg": 10.0,
        "cluster_delay_ns": 150.0,
        "intra_delay_spread_ns": 20.0,
        "pdp_decay_ns": 150.0,
        "shadowing_db": 3.0,
        "first_arrival_ns": 50.0,
        "scale": 0.01471,  # = _calibrated_scale of this preset, to 4 significant digits
    },
}


@functools.cache
def _preset(key: str) -> SyntheticConfig:
    return SyntheticConfig(**PRESETS[key])


@functools.lru_cache(maxsize=32)
def _calibrated_scale(unscaled: SyntheticConfig) -> float:
    """0.5 over the largest |Re|/|Im| of a fixed reference batch: the data-set scale.

    Like COST2100's release, one scale for the whole data set; deterministic because the
    reference batch has a fixed seed. Samples of other seeds may exceed it a little and clip.
    """
    paths = _draw_paths(unscaled, _SCALE_SAMPLES, _rng(_SCALE_SEED, 0))
    peak = 0.0
    for start in range(0, _SCALE_SAMPLES, CHUNK):  # in chunks: bounded memory
        part = Paths(
            *(a[start : start + CHUNK] for a in (paths.sin_angle, paths.delay, paths.gain))
        )
        ha = _angular_delay_chunk(part)
        peak = max(peak, float(np.abs(ha.real).max()), float(np.abs(ha.imag).max()))
    return float(f"{0.5 / peak:.4g}")  # rounded: a stable figure to record


# --------------------------------------------------------------------------- paths


@dataclass(frozen=True)
class Paths:
    """Per-sample multipath: sin(angle) (B, P), delay in bins (B, P), complex gain (B, P)."""

    sin_angle: np.ndarray
    delay: np.ndarray
    gain: np.ndarray


def _rng(seed: int, chunk: int) -> np.random.Generator:
    """The generator of chunk `chunk` of seed `seed`: independent streams per (seed, chunk)."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(chunk,)))


def _draw_paths(cfg: SyntheticConfig, batch: int, rng: np.random.Generator) -> Paths:
    """Random clusters and sub-paths for `batch` samples, flattened to P = C*M paths."""
    c, m = cfg.clusters_max, cfg.subpaths
    bins_per_ns = cfg.bandwidth_hz * 1e-9
    n_clusters = rng.integers(cfg.clusters_min, cfg.clusters_max + 1, size=(batch, 1))
    active = np.arange(c)[None, :] < n_clusters
    half_sector = math.radians(cfg.sector_deg) / 2
    mean_angle = rng.uniform(-half_sector, half_sector, size=(batch, c))
    excess = rng.exponential(1.0, size=(batch, c)) * cfg.cluster_delay_ns
    excess[:, 0] = 0.0
    first = rng.uniform(0.0, 1.0, size=(batch, 1)) * cfg.first_arrival_ns
    shadow = rng.standard_normal((batch, c)) * cfg.shadowing_db
    power = np.exp(-excess / cfg.pdp_decay_ns) * 10.0 ** (shadow / 10.0) * active
    power /= power.sum(axis=1, keepdims=True)
    spread = math.radians(cfg.angular_spread_deg) / math.sqrt(2.0)  # Laplacian scale
    angle = mean_angle[:, :, None] + rng.laplace(0.0, 1.0, size=(batch, c, m)) * spread
    intra = rng.exponential(1.0, size=(batch, c, m)) * cfg.intra_delay_spread_ns
    delay_ns = first[:, :, None] + excess[:, :, None] + intra
    gauss = rng.standard_normal((batch, c, m, 2))
    gain = (gauss[..., 0] + 1j * gauss[..., 1]) * np.sqrt(power[:, :, None] / (2.0 * m))
    return Paths(
        sin_angle=_off_grid(np.sin(angle).reshape(batch, -1) * (N_ANTENNAS / 2)) / (N_ANTENNAS / 2),
        delay=_off_grid((delay_ns * bins_per_ns).reshape(batch, -1)),
        gain=gain.reshape(batch, -1),
    )


def _off_grid(x: np.ndarray) -> np.ndarray:
    """`x` moved (by < 1e-6) away from integers, where the closed form would be 0/0.

    Angles are passed as 16 sin(theta) and delays in bins: in both units the DFT grid points
    that make a geometric-series denominator vanish are the integers.
    """
    grid = np.rint(x)
    offset = x - grid
    near = np.abs(offset) < _NUDGE
    if not near.any():
        return x
    return np.where(near, grid + np.where(offset < 0, -_NUDGE, _NUDGE), x)


# --------------------------------------------------------------------------- closed form


@functools.lru_cache(maxsize=1)
def _bin_factors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin constants of the closed form.

    Angle bins v_k = pi k / 32: rows (cos v, sin v), (2, 32) float32. Delay bins
    w_d = pi d / 1024: rows (cos w, -sin w), (2, 32) float32. The outer phase
    (-1)^k e^{-j 31 v_k} times (-1)^d e^{j 1023 w_d}, (32, 32) complex64.
    """
    k = np.arange(N_ANTENNAS)
    d = np.arange(N_DELAY)
    v = np.pi * k / N_ANTENNAS
    w = np.pi * d / N_SUBCARRIERS
    beta = (-1.0) ** k * np.exp(-1j * (N_ANTENNAS - 1) * v)
    gamma = (-1.0) ** d * np.exp(1j * (N_SUBCARRIERS - 1) * w)
    return (
        np.stack([np.cos(v), np.sin(v)]).astype(np.float32),
        np.stack([np.cos(w), -np.sin(w)]).astype(np.float32),
        np.outer(beta, gamma).astype(np.complex64),
    )


def _weighted_reciprocal_sines(
    x: np.ndarray,
    bins: np.ndarray,
    nearest: np.ndarray,
    step: float,
    weights: np.ndarray,
) -> np.ndarray:
    """weights[p, w] / sin(x_p + step * j) for every path p, weight w, bin j: (B, P, W, 32).

    sin(x + y_j) = sin(x) cos(y_j) + cos(x) sin(y_j) is a rank-2 product, so the denominators
    are one float32 matrix product of (sin x, cos x) / weight with `bins` = rows (cos y, sin y);
    dividing the basis by the weight before the reciprocal folds the weight in for free.
    Float32 only hurts the one bin per path where the sine nearly vanishes, `nearest` (B, P):
    that entry is recomputed in float64. Every other |sine| exceeds sin(|step| / 2), so it
    stays precise. Weights below 1e-30 in magnitude (inactive clusters) are made 1e-30.
    """
    safe = np.where(np.abs(weights) < 1e-30, 1e-30, weights)  # (B, P, W) float64
    x32 = np.mod(x, 2 * np.pi).astype(np.float32)  # float32 trigonometry wants small angles
    trig = np.stack([np.sin(x32), np.cos(x32)], axis=-1)  # (B, P, 2)
    basis = trig[:, :, None, :] / safe[..., None].astype(np.float32)  # (B, P, W, 2)
    den = _small_matmul(basis.reshape(-1, 2), bins)  # (B*P*W, 32)
    exact = np.sin(x + step * nearest)[..., None] / safe  # (B, P, W) float64
    cols = np.repeat(nearest.ravel(), weights.shape[-1])
    den[np.arange(len(den)), cols] = exact.ravel()
    np.reciprocal(den, out=den)
    return den.reshape(*basis.shape[:3], -1)


_BLAS_SINGLE_THREAD = 262_144
"""OpenBLAS runs a GEMM with m*n*k at most this on one thread. Bigger products go
multi-threaded, which for these memory-bound shapes only adds spinning threads (and, under
CPU contention or beside pytest-xdist workers, slows things down many times), so products are
cut into pieces below it."""


def _small_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (M, K) @ b (K, N) as row blocks each below `_BLAS_SINGLE_THREAD` (see there)."""
    rows = max(1, _BLAS_SINGLE_THREAD // (a.shape[1] * b.shape[1]))
    m = len(a)
    if m <= rows:
        return a @ b
    full = (m // rows) * rows
    out = np.empty((m, b.shape[1]), dtype=np.result_type(a, b))
    np.matmul(
        a[:full].reshape(-1, rows, a.shape[1]), b, out=out[:full].reshape(-1, rows, b.shape[1])
    )
    if full < m:
        np.matmul(a[full:], b, out=out[full:])
    return out


def _angle_phase(paths: Paths) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """u = pi s / 2, the nearly-singular angle bin, and the per-path factor of the antenna DFT.

    sum_n e^{-j pi n s} e^{-j 2pi nk/32} = alpha_p beta_k / sin(u_p + v_k) with
    alpha = e^{-j 31 u} sin(32 u); the sine nearly vanishes where 16 s + k = 0 (mod 32).
    sin(32 u) vanishes there too, so it is taken in float64.
    """
    u = np.pi * paths.sin_angle / 2
    nearest = np.mod(-np.rint(paths.sin_angle * (N_ANTENNAS / 2)), N_ANTENNAS).astype(np.intp)
    alpha = np.sin(N_ANTENNAS * u) * _unit(-(N_ANTENNAS - 1) * u)
    return u, nearest, alpha


def _delay_terms(paths: Paths) -> tuple[np.ndarray, np.ndarray]:
    """Per-path factor delta (B, P) and reciprocal denominators (B, P, 32) of the delay IDFT.

    (1/1024) sum_f e^{-j 2pi f t/1024} e^{j 2pi fd/1024} = delta_p gamma_d / sin(s_p - w_d),
    s = pi t / 1024, delta = (1/1024) sin(pi t) e^{-j 1023 s}. The sine nearly vanishes at
    the delay bin nearest t modulo 1024 (clamped to the kept rows; elsewhere it is large).
    """
    s = np.pi * paths.delay / N_SUBCARRIERS
    delta = np.sin(np.pi * paths.delay) / N_SUBCARRIERS * _unit(-(N_SUBCARRIERS - 1) * s)
    nearest = np.mod(np.rint(paths.delay), N_SUBCARRIERS)
    nearest = np.minimum(nearest, N_DELAY - 1).astype(np.intp)
    ones = np.ones((*s.shape, 1))
    recip = _weighted_reciprocal_sines(s, _bin_factors()[1], nearest, -np.pi / N_SUBCARRIERS, ones)
    return delta, recip[:, :, 0]


def _unit(phase: np.ndarray) -> np.ndarray:
    """e^{j phase} as complex64: reduced modulo 2 pi in float64, then float32 cos and sin
    (numpy's float32 trigonometry is vectorised, several times faster than float64)."""
    reduced = np.mod(phase, 2 * np.pi).astype(np.float32)
    out = np.empty(phase.shape, dtype=np.complex64)
    out.real = np.cos(reduced)
    out.imag = np.sin(reduced)
    return out


def _angle_weighted(paths: Paths, weights: np.ndarray) -> np.ndarray:
    """Re/Im of weights[p] * alpha_p / sin(u_p + v_k): (B, P, 2, 32) float32."""
    u, nearest, alpha = _angle_phase(paths)
    w = weights * alpha
    stacked = np.stack([w.real, w.imag], axis=-1)  # (B, P, 2)
    return _weighted_reciprocal_sines(u, _bin_factors()[0], nearest, np.pi / N_ANTENNAS, stacked)


def _angular_delay_parts(paths: Paths) -> tuple[np.ndarray, np.ndarray]:
    """Ha / phase as (real, imag) float32 (B, 32, 32) each: the closed-form 2-D DFT.

    Ha[k, d] = beta_k gamma_d sum_p c_p / (sin(u_p + v_k) sin(s_p - w_d)), c = g alpha delta:
    one real (B, 64, P) x (B, P, 32) product per chunk, real and imaginary parts of c stacked.
    The phase beta_k gamma_d (`_bin_factors()[2]`) is left to the caller.
    """
    delta, rd = _delay_terms(paths)
    left = _angle_weighted(paths, paths.gain * delta)  # (B, P, 2, 32)
    batch, n_paths = left.shape[:2]
    prod = np.matmul(left.reshape(batch, n_paths, -1).transpose(0, 2, 1), rd)  # (B, 64, 32)
    return prod[:, :N_ANTENNAS], prod[:, N_ANTENNAS:]


def _angular_delay_chunk(paths: Paths) -> np.ndarray:
    """Ha (B, 32 angle, 32 delay) complex64, unscaled, by the closed-form 2-D DFT."""
    re, im = _angular_delay_parts(paths)
    return ((re + 1j * im) * _bin_factors()[2]).astype(np.complex64)


def _csi_into(out: np.ndarray, paths: Paths, scale: float) -> None:
    """Write scale * [Re Ha, Im Ha] + 0.5, clipped to [0, 1], into `out` (B, 2, 32, 32)."""
    re, im = _angular_delay_parts(paths)
    phase = _bin_factors()[2] * np.complex64(scale)
    pr, pi = phase.real, phase.imag
    real, imag = out[:, 0], out[:, 1]
    np.multiply(re, pr, out=real)
    real -= im * pi
    np.multiply(re, pi, out=imag)
    imag += im * pr
    out += np.float32(0.5)
    np.clip(out, 0.0, 1.0, out=out)


def _freq_chunk(paths: Paths) -> np.ndarray:
    """HF (B, 32 angle, 125 frequencies) complex64, unscaled: the angle-domain channel at
    fractional subcarriers f_m = 1024 m / 257 (the grid of the rho evaluator's FFT).

    HF[k, m] = beta_k sum_p (g alpha / sin(u + v_k))_p e^{-j 2pi m t_p / 257}, done as one real
    (B, 64, P) x (B, P, 250) product: small complex products are slow in multi-threaded BLAS.
    """
    left = _angle_weighted(paths, paths.gain)  # (B, P, 2, 32): Re, Im
    batch, n_paths = left.shape[:2]
    phase = _unit((-2 * np.pi / RHO_FFT) * paths.delay[..., None] * np.arange(N_FREQ))
    right = np.concatenate([phase.real, phase.imag], axis=-1)  # (B, P, 250)
    lhs = left.reshape(batch, n_paths, -1).transpose(0, 2, 1)  # (B, 64, P)
    width = max(1, _BLAS_SINGLE_THREAD // (lhs.shape[1] * n_paths))
    prod = np.concatenate(
        [np.matmul(lhs, right[..., i : i + width]) for i in range(0, right.shape[-1], width)],
        axis=-1,
    )
    rr, ri = prod[:, :N_ANTENNAS, :N_FREQ], prod[:, :N_ANTENNAS, N_FREQ:]
    ir, ii = prod[:, N_ANTENNAS:, :N_FREQ], prod[:, N_ANTENNAS:, N_FREQ:]
    hf = (rr - ii) + 1j * (ri + ir)
    beta = _bin_factors()[2][:, 0]  # gamma_0 = 1, so column 0 is beta
    return (hf * beta[:, None]).astype(np.complex64)


def angular_delay_reference(paths: Paths) -> np.ndarray:
    """Ha the slow, literal way: build H (B, 32, 1024), DFT over antennas, IDFT over subcarriers.

    Used by the tests to check the closed form; keeps the first 32 delay rows, unscaled.
    """
    n = np.arange(N_ANTENNAS)
    f = np.arange(N_SUBCARRIERS)
    steer = np.exp(-1j * np.pi * paths.sin_angle[..., None] * n)  # (B, P, 32)
    freq = np.exp(-2j * np.pi * paths.delay[..., None] * f / N_SUBCARRIERS)  # (B, P, 1024)
    h = np.einsum("bp,bpn,bpf->bnf", paths.gain, steer, freq)
    ha = np.fft.ifft(np.fft.fft(h, axis=1), axis=2)[:, :, :N_DELAY]
    return ha.astype(np.complex64)


# --------------------------------------------------------------------------- public API


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
    n, seed = _check_count("n", n, 1), _check_count("seed", seed, 0)
    workers = _default_workers() if workers is None else _check_count("workers", workers, 1)
    cfg = _config(scenario)
    scale = float(cfg.scale)  # type: ignore[arg-type]  # set in __post_init__
    x = np.empty((n, 2, N_ANTENNAS, N_DELAY), dtype=np.float32)
    hf = np.empty((n, N_ANTENNAS, N_FREQ), dtype=np.complex64) if return_freq else None

    def run(index: int) -> int:
        start = index * CHUNK
        stop = min(start + CHUNK, n)
        paths = _draw_paths(cfg, stop - start, _rng(seed, index))
        _csi_into(x[start:stop], paths, scale)
        if hf is not None:
            hf[start:stop] = _freq_chunk(paths) * np.float32(scale)
        return stop - start

    chunks = range(-(-n // CHUNK))
    threads = min(workers, len(chunks))
    with _progress_bar(n, progress, cfg.name) as bar:
        if threads <= 1:
            for index in chunks:
                bar.update(run(index))
        else:
            with ThreadPoolExecutor(max_workers=threads) as pool:
                for done in pool.map(run, chunks):
                    bar.update(done)
    return (x, hf) if hf is not None else x


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


def write_synthetic_dataset(
    out_dir: str | os.PathLike[str],
    *,
    scenario: str = "indoor",
    n: int = 15000,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 2 / 15,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Path]:
    """Write a synthetic data set in the exact COST2100 layout; returns the paths by role.

    Files: `DATA_H{train,val,test}{in|out}.mat` (`HT`, float32 (N, 2048)),
    `DATA_HtestF{in|out}_all.mat` (`HF_all`, complex64 (N_test, 4000)) and a manifest
    `synthetic_dataset.json` recording the generator, configuration, scale and per-split
    seeds (disjoint, from `split_seeds`). Default fractions match COST2100's 100k/30k/20k.
    Files are written into a temporary directory and moved into place.
    """
    from csideploy.calibration.io import split_filename

    cfg = _config(scenario)
    if cfg.name not in ("indoor", "outdoor"):
        raise ValueError(f"config name {cfg.name!r} must be indoor or outdoor (it names the files)")
    counts = _split_counts(n, val_fraction, test_fraction)
    seeds = split_seeds(seed)
    names = {s: split_filename(s, cfg.name) for s in ("train", "val", "test", "testF")}
    names["manifest"] = "synthetic_dataset.json"
    target = Path(out_dir)
    _refuse_existing(target, names.values(), overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write_splits(staging, cfg, counts, seeds, names, progress)
        manifest = _manifest(cfg, n=n, seed=seed, seeds=seeds, counts=counts, names=names)
        (staging / names["manifest"]).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(staging, target, names.values())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {role: target / name for role, name in names.items()}


def _write_splits(
    staging: Path,
    cfg: SyntheticConfig,
    counts: dict[str, int],
    seeds: dict[str, int],
    names: dict[str, str],
    progress: bool,
) -> None:
    """Generate each split with its own seed and save it (the test split with HF_all)."""
    from csideploy.calibration.io import save_csi_freq_mat, save_csi_mat

    for split in ("train", "val"):
        x = generate(counts[split], scenario=cfg, seed=seeds[split], progress=progress)
        save_csi_mat(staging / names[split], x)
    x, hf = generate(
        counts["test"], scenario=cfg, seed=seeds["test"], progress=progress, return_freq=True
    )
    save_csi_mat(staging / names["test"], x)
    save_csi_freq_mat(staging / names["testF"], hf)


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
        "generator": GENERATOR_ID,
        "note": "synthetic stand-in data, NOT COST2100; figures are not comparable",
        "scenario": cfg.name,
        "n": n,
        "seed": seed,
        "split_seeds": seeds,
        "counts": counts,
        "files": names,
        "scale": cfg.scale,
        "zero_offset": 0.5,
        "hf_frequencies": "fractional subcarriers 1024*m/257, m=0..124, angle domain",
        "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
    }


def _refuse_existing(target: Path, names: Any, overwrite: bool) -> None:
    """OutputExistsError when a file to be written exists and `overwrite` is off."""
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target}: exists and is not a directory")
    clash = [name for name in names if (target / name).exists()]
    if clash and not overwrite:
        raise OutputExistsError(
            f"{target}: would overwrite {', '.join(clash)}; pass overwrite=True (--force)"
        )


def _move_into_place(staging: Path, target: Path, names: Any) -> None:
    """Put the staged files at `target`: one directory rename when `target` does not exist
    yet (all or nothing), else one atomic os.replace per file."""
    if not target.exists():
        try:
            os.rename(staging, target)
            _chmod_dir(target)
            return
        except OSError:  # lost a race to another writer: fall back to per-file moves
            pass
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.replace(staging / name, target / name)


def _chmod_dir(path: Path) -> None:
    """Give a mkdtemp directory (0700) the permissions a plain mkdir would have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)
