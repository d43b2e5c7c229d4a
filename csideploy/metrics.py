"""Reconstruction metrics for CSI feedback: NMSE under three named conventions, rho, SQNR.

NMSE = E{ ||Ha - Ha_hat||^2 / ||Ha||^2 } on the 32x32 angular-delay CSI after subtracting 0.5
from both (the data were offset by 0.5 when they were scaled into [0, 1]), in dB. Published
code reduces it over a data set in three different ways, which differ by up to a few dB on
the same reconstruction, so every figure must carry its convention (`NMSE_CONVENTIONS`):

- ``linear``: mean of the per-sample ratios over the whole set, then dB. The definition in
  every paper and in CsiNet (Python), ACRNet and BCsiNet code. The default.
- ``batch_db``: one dB value per consecutive batch of `batch_size` (200 in CRNet / CLNet
  code), then the arithmetic mean of those dB values (a short last batch counts as one).
- ``sample_db``: mean of the per-sample dB values (CsiNet MATLAB, DualNet-MP).

An all-zero reference sample (all 0.5) makes its ratio inf, or NaN when the reconstruction is
exact too; the result is then inf or NaN, never a silently finite number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from csideploy.errors import ShapeError

NMSE_CONVENTIONS: dict[str, str] = {
    "linear": "mean of per-sample linear NMSE over the whole set, then dB (papers' definition)",
    "batch_db": "NMSE in dB per batch of batch_size samples, then the mean of those dB values "
    "(CRNet/CLNet code)",
    "sample_db": "mean of per-sample NMSE in dB (CsiNet MATLAB, DualNet-MP)",
}
ZERO_OFFSET = 0.5
RHO_FFT_SIZE = 257
RHO_SUBCARRIERS = 125
_RHO_CHUNK = 1024


def _as_array(value: Any, name: str) -> np.ndarray:
    """`value` (numpy array, torch tensor or sequence) as a numpy array, on the CPU."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor, without importing torch
        tensor = value.detach().cpu()
        if tensor.is_complex():
            return tensor.resolve_conj().numpy()
        try:
            return tensor.numpy()
        except TypeError:  # bfloat16 and other dtypes numpy lacks
            return tensor.float().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{name}: not an array ({type(value).__name__})") from exc


def _pair(x: Any, x_hat: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x, x_hat) as float64 arrays, checked to share one (N, 2, H, W) shape with N > 0."""
    a, b = _as_array(x, "x"), _as_array(x_hat, "x_hat")
    if a.shape != b.shape:
        raise ShapeError(f"NMSE: x has shape {a.shape} but x_hat has shape {b.shape}")
    if a.ndim != 4 or a.shape[1] != 2 or a.shape[0] == 0:
        raise ShapeError(
            f"NMSE: expected (N, 2, 32, 32) arrays with N > 0 (real/imag channels), "
            f"got x {a.shape} and x_hat {b.shape}"
        )
    if a.dtype.kind == "c" or b.dtype.kind == "c":
        raise ShapeError("NMSE: expected real (N, 2, H, W) arrays, got complex ones")
    return a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)


def nmse_linear_per_sample(x: Any, x_hat: Any) -> np.ndarray:
    """Per-sample linear NMSE ||x - x_hat||^2 / ||x - 0.5||^2, float64 (N,).

    Both arrays are (N, 2, H, W) in the [0, 1] convention; 0.5 is subtracted from both, so it
    cancels in the error and only matters for the power.
    """
    a, b = _pair(x, x_hat)
    n = len(a)
    power = np.square(a.reshape(n, -1) - ZERO_OFFSET).sum(axis=1)
    error = np.square(a.reshape(n, -1) - b.reshape(n, -1)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return error / power


def _db(value: np.ndarray | float) -> np.ndarray:
    """10 log10(value), with log10(0) = -inf and no warnings."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(value)


def nmse(x: Any, x_hat: Any, *, convention: str = "linear", batch_size: int = 200) -> float:
    """NMSE of `x_hat` against `x` in dB under `convention` (see `NMSE_CONVENTIONS`).

    `x` and `x_hat` are (N, 2, 32, 32) numpy arrays or torch tensors in the COST2100 [0, 1]
    convention. `batch_size` only matters for ``batch_db`` (200 reproduces CRNet/CLNet).
    """
    if convention not in NMSE_CONVENTIONS:
        known = ", ".join(NMSE_CONVENTIONS)
        raise ValueError(f"unknown NMSE convention {convention!r}; known: {known}")
    ratios = nmse_linear_per_sample(x, x_hat)
    if convention == "linear":
        return float(_db(ratios.mean()))
    if convention == "sample_db":
        return float(_db(ratios).mean())
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    size = int(batch_size)
    batch_means = [ratios[i : i + size].mean() for i in range(0, len(ratios), size)]
    return float(_db(np.asarray(batch_means)).mean())


def _split_rho_args(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """(hf, x_hat) from two arguments in either order: HF_all is the complex one."""
    first, second = _as_array(a, "hf_true"), _as_array(b, "x_hat")
    if first.dtype.kind != "c" and second.dtype.kind == "c":
        first, second = second, first
    if first.dtype.kind != "c":
        raise ShapeError(
            f"rho: HF_all must be complex (N, 32, 125) or (N, 4000), got dtype {first.dtype} "
            f"with shape {first.shape}"
        )
    if second.dtype.kind == "c":
        raise ShapeError(f"rho: the reconstruction must be real (N, 2, 32, 32), got {second.dtype}")
    return first, second


def rho(hf_true: Any, x_hat: Any) -> float:
    """Cosine similarity rho between HF_all and a reconstruction, in the frequency domain.

    The CsiNet/CRNet evaluation: the (0.5-subtracted) reconstruction Ha_hat (N, 32 angles,
    32 delays) is zero-padded along delay to 257, FFT'd along delay and cut to the first 125
    bins; per sample and bin, rho = |h^H h_hat| / (||h|| ||h_hat||) over the 32 angle entries,
    then the mean over bins and samples. `hf_true` is complex (N, 4000) or (N, 32, 125).
    The two arguments are told apart by dtype, so `rho(x_hat, hf)` works too.
    """
    hf, xh = _split_rho_args(hf_true, x_hat)
    if xh.ndim != 4 or xh.shape[1] != 2 or xh.shape[0] == 0:
        raise ShapeError(f"rho: x_hat must be (N, 2, 32, 32) with N > 0, got {xh.shape}")
    n, _, n_ant, _ = xh.shape
    if hf.ndim == 2 and hf.shape == (n, n_ant * RHO_SUBCARRIERS):
        hf = hf.reshape(n, n_ant, RHO_SUBCARRIERS)
    if hf.shape != (n, n_ant, RHO_SUBCARRIERS):
        raise ShapeError(
            f"rho: HF_all has shape {hf.shape} but x_hat has shape {xh.shape}; expected "
            f"HF_all ({n}, {n_ant * RHO_SUBCARRIERS}) or ({n}, {n_ant}, {RHO_SUBCARRIERS})"
        )
    total = 0.0
    for start in range(0, n, _RHO_CHUNK):  # bounded memory: a chunk is (1024, 32, 257) complex
        stop = start + _RHO_CHUNK
        total += float(_rho_terms(hf[start:stop], xh[start:stop]).sum())
    return total / (n * RHO_SUBCARRIERS)


def _rho_terms(hf: np.ndarray, xh: np.ndarray) -> np.ndarray:
    """Per-sample, per-bin cosine similarities (B, 125) of one chunk."""
    ha_hat = (xh[:, 0] - ZERO_OFFSET) + 1j * (xh[:, 1] - ZERO_OFFSET)
    spectrum = np.fft.fft(ha_hat, n=RHO_FFT_SIZE, axis=-1)[..., :RHO_SUBCARRIERS]
    h = hf.astype(np.complex128, copy=False)
    inner = np.abs(np.sum(np.conj(h) * spectrum, axis=1))
    norms = np.linalg.norm(h, axis=1) * np.linalg.norm(spectrum, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return inner / norms


def sqnr_db(reference: Any, test: Any) -> float:
    """Signal-to-quantisation-noise ratio 10 log10(sum ref^2 / sum (ref - test)^2), in dB.

    The one SQNR of the project: an artifact's output (e.g. an INT8 encoder's codeword) against
    the float reference, as given (no 0.5 offset). Arrays or tensors, or sequences of them (the
    outputs of one graph, taken together). inf when the two are identical, -inf when the
    reference is all zeros or the error is not finite.
    """
    ref, out = _values(reference, "reference"), _values(test, "test")
    if ref.shape != out.shape:
        raise ShapeError(f"SQNR: reference has shape {ref.shape} but test has shape {out.shape}")
    if ref.size == 0:
        raise ShapeError(f"SQNR: empty arrays (shape {ref.shape})")
    error = (ref - out).ravel()
    noise, signal = float(error @ error), float(np.square(ref).sum())
    if not np.isfinite(noise) or signal == 0.0:
        return float("-inf") if noise != 0.0 else float("inf")
    if noise == 0.0:
        return float("inf")
    return float(_db(signal / noise))


def _values(value: Any, name: str) -> np.ndarray:
    """One float64 array: a sequence of arrays is flattened and joined in order."""
    if isinstance(value, (list, tuple)) and value and not np.isscalar(value[0]):
        return np.concatenate([_as_array(v, name).astype(np.float64).ravel() for v in value])
    return _as_array(value, name).astype(np.float64, copy=False)
