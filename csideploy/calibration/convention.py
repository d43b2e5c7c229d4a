"""The released COST2100 convention that every CSI source here writes (docs/data.md).

A sample is the 32 x 32 angular-delay matrix Ha: angle bins centred (zero angle in the middle,
the DFT over antennas fftshifted), delay on the last axis, real and imaginary parts side by
side. Each sample is divided by twice its own largest |Re| or |Im| and offset by 0.5, so every
sample reaches 0 or 1 somewhere and 0.5 means zero. `HF_all` (for rho) is scaled by the same
per-sample factor and uses the same angle-bin order, so a perfect reconstruction scores rho 1.
"""

from __future__ import annotations

import numpy as np

ZERO = 0.5
_TINY = np.float32(1e-30)


def scale_per_sample(centred: np.ndarray) -> np.ndarray:
    """Scale (B, ...) real CSI in place to the released range; returns the factors (B,).

    `centred` holds Re/Im of Ha (zero meaning zero); afterwards each sample is
    centred / (2 max |centred|) + 0.5. The factor 1 / (2 max |centred|) is returned so that
    HF_all can be scaled alike. An all-zero sample stays at 0.5.
    """
    axes = tuple(range(1, centred.ndim))
    # max and -min: two reductions without the temporary array np.abs would allocate
    peak = np.maximum(np.maximum(centred.max(axis=axes), -centred.min(axis=axes)), _TINY)
    factors = (np.float32(0.5) / peak).astype(centred.dtype)
    centred *= factors.reshape(-1, *([1] * len(axes)))  # broadcasting: works for any strides
    centred += centred.dtype.type(ZERO)
    return factors


def released_csi(ha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (B, 2, 32, 32), factors (B,)) from Ha complex (B, 32 angle, 32 delay).

    `ha` has its angle bins in plain DFT order (bin 0 = zero angle); they are centred here.
    """
    centred = np.fft.fftshift(np.asarray(ha), axes=1)
    x = np.ascontiguousarray(np.stack([centred.real, centred.imag], axis=1), dtype=np.float32)
    return x, scale_per_sample(x)


def released_freq(hf: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """HF_all complex64 (B, 32, 125) in the order and scale of `released_csi`'s output.

    `hf` is the angle-domain channel (B, 32 angle in plain DFT order, 125 frequencies).
    """
    centred = np.fft.fftshift(np.asarray(hf), axes=1)
    return (centred * factors[:, None, None]).astype(np.complex64)
