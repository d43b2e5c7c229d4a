"""Real weights and matching CSI for the INT8 tests (all inside the repository).

Indoor: the CRNet CR 1/64 indoor checkpoint on the COST2100-model indoor fixture (160
samples). Outdoor: the CRNet CR 1/64 outdoor checkpoint on synthetic outdoor CSI brought to
the released outdoor convention by `released_outdoor` (per-sample scaling, centred angle
bins), until the built-in generator writes that convention itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CRNET_INDOOR = FIXTURES / "official" / "crnet" / "in_64.pth"
CRNET_OUTDOOR = FIXTURES / "official" / "crnet" / "out_64.pth"
COST2100_INDOOR = FIXTURES / "cost2100" / "cost2100_indoor.mat"


def released_outdoor(csi: np.ndarray) -> np.ndarray:
    """(x - 0.5) / (2 max |component| of the sample) + 0.5, angle bins fftshifted (axis 2:
    the layout is (sample, real/imag, angle, delay))."""
    centred = csi.astype(np.float64) - 0.5
    peak = np.abs(centred).reshape(len(csi), -1).max(axis=1)
    scaled = centred / (2.0 * np.maximum(peak, 1e-12))[:, None, None, None] + 0.5
    return np.fft.fftshift(scaled, axes=2).astype(np.float32)


def outdoor_csi(samples: int, seed: int) -> np.ndarray:
    """Synthetic outdoor CSI in the released outdoor convention."""
    from csideploy.calibration import synthetic

    return released_outdoor(synthetic.generate(samples, scenario="outdoor", seed=seed))
