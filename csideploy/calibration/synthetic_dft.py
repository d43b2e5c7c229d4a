"""The built-in generator's multipath draws and their angular-delay CSI in closed form.

`_draw_paths` draws clusters and sub-paths (see `csideploy.calibration.synthetic` for the
model); `_csi_into` turns them into CSI in the released convention (centred angle bins,
per-sample scaling) without building the 32 x 1024 channel; `angular_delay_reference` does the
same the slow, literal way for the tests.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from csideploy.calibration.convention import scale_per_sample
from csideploy.calibration.synthetic_config import SyntheticConfig

N_ANTENNAS = 32
N_SUBCARRIERS = 1024
N_DELAY = 32
N_FREQ = 125
RHO_FFT = 257
_NUDGE = 1e-6
"""Smallest distance a path keeps from a DFT grid point (in bins), so the closed form is exact."""


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
    span = cfg.first_arrival_ns - cfg.first_arrival_min_ns
    first = cfg.first_arrival_min_ns + rng.uniform(0.0, 1.0, size=(batch, 1)) * span
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

    Angle bins are centred (the DFT over antennas fftshifted): output bin k holds DFT bin
    k - 16, of angle v_k = pi (k - 16) / 32 = pi k / 32 - pi / 2. The denominators are taken as
    sin((u - pi/2) + pi k / 32), so the angle rows are (cos, sin) of pi k / 32, (2, 32) float32.
    Delay bins w_d = pi d / 1024: rows (cos w, -sin w), (2, 32) float32. The outer phase
    (-1)^k e^{-j 31 v_k} times (-1)^d e^{j 1023 w_d}, (32, 32) complex64.
    """
    k = np.arange(N_ANTENNAS)
    d = np.arange(N_DELAY)
    grid = np.pi * k / N_ANTENNAS
    v = grid - np.pi / 2
    w = np.pi * d / N_SUBCARRIERS
    beta = (-1.0) ** k * np.exp(-1j * (N_ANTENNAS - 1) * v)
    gamma = (-1.0) ** d * np.exp(1j * (N_SUBCARRIERS - 1) * w)
    return (
        np.stack([np.cos(grid), np.sin(grid)]).astype(np.float32),
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
    """u - pi/2 (u = pi s / 2), the nearly-singular angle bin, and the per-path factor.

    sum_n e^{-j pi n s} e^{-j 2pi n (k - 16)/32} = alpha_p beta_k / sin(u_p + v_k) with
    alpha = e^{-j 31 u} sin(32 u) and v_k = pi (k - 16) / 32 (centred bins, see
    `_bin_factors`); the sine nearly vanishes where 16 s + k - 16 = 0 (mod 32). sin(32 u)
    vanishes there too, so it is taken in float64.
    """
    u = np.pi * paths.sin_angle / 2
    half = N_ANTENNAS / 2
    nearest = np.mod(half - np.rint(paths.sin_angle * half), N_ANTENNAS).astype(np.intp)
    alpha = np.sin(N_ANTENNAS * u) * _unit(-(N_ANTENNAS - 1) * u)
    return u - np.pi / 2, nearest, alpha


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


def _csi_into(out: np.ndarray, paths: Paths) -> np.ndarray:
    """Write [Re Ha, Im Ha] in the released convention into `out` (B, 2, 32, 32).

    Each sample is scaled by its own largest component (`convention.scale_per_sample`);
    returns the per-sample factors (B,), which `_freq_chunk`'s HF needs too.
    """
    re, im = _angular_delay_parts(paths)
    phase = _bin_factors()[2]
    pr, pi = phase.real, phase.imag
    real, imag = out[:, 0], out[:, 1]
    np.multiply(re, pr, out=real)
    real -= im * pi
    np.multiply(re, pi, out=imag)
    imag += im * pr
    return scale_per_sample(out)


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

    Used by the tests to check the closed form; keeps the first 32 delay rows, unscaled, and
    centres the angle bins (fftshift over the antenna DFT) as the closed form does.
    """
    n = np.arange(N_ANTENNAS)
    f = np.arange(N_SUBCARRIERS)
    steer = np.exp(-1j * np.pi * paths.sin_angle[..., None] * n)  # (B, P, 32)
    freq = np.exp(-2j * np.pi * paths.delay[..., None] * f / N_SUBCARRIERS)  # (B, P, 1024)
    h = np.einsum("bp,bpn,bpf->bnf", paths.gain, steer, freq)
    angle = np.fft.fftshift(np.fft.fft(h, axis=1), axes=1)
    ha = np.fft.ifft(angle, axis=2)[:, :, :N_DELAY]
    return ha.astype(np.complex64)
