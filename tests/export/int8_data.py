"""Real weights and matching CSI for the INT8 tests (all inside the repository).

Indoor: the CRNet CR 1/64 indoor checkpoint on the COST2100-model indoor fixture (160
samples). Outdoor: the CRNet CR 1/64 outdoor checkpoint on built-in outdoor CSI, written in
the released convention (per-sample scaling, centred angle bins).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CRNET_INDOOR = FIXTURES / "official" / "crnet" / "in_64.pth"
CRNET_OUTDOOR = FIXTURES / "official" / "crnet" / "out_64.pth"
COST2100_INDOOR = FIXTURES / "cost2100" / "cost2100_indoor.mat"


def outdoor_csi(samples: int, seed: int) -> np.ndarray:
    """Built-in outdoor CSI, which the generator writes in the released convention."""
    from csideploy.calibration import synthetic

    return synthetic.generate(samples, scenario="outdoor", seed=seed)
