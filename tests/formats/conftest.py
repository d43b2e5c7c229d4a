"""Fixtures of the TFLite format tests: two zoo encoders with non-trivial BatchNorm statistics,
and CSI-shaped calibration and evaluation samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from csideploy.models import build


def _perturb_batchnorm(module: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm non-trivial statistics so that folding and scales matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                n = layer.num_features
                layer.running_mean.normal_(0.0, 0.2, generator=generator)
                layer.running_var.uniform_(0.5, 2.0, generator=generator)
                layer.weight.uniform_(0.5, 1.5, generator=generator)
                layer.bias.normal_(0.0, 0.2, generator=generator)
                assert layer.running_mean.shape == (n,)
    return module.eval()


def _csi_like(n: int, seed: int) -> np.ndarray:
    """CSI-shaped data in [0, 1] around 0.5: energy in the first delay taps, like COST2100."""
    rng = np.random.default_rng(seed)
    decay = np.exp(-np.arange(32) / 4.0)[None, None, None, :]
    h = rng.standard_normal((n, 2, 32, 32)) * decay
    h /= np.abs(h).max(axis=(1, 2, 3), keepdims=True)
    return (0.5 + 0.45 * h).astype(np.float32)


ENCODERS = {
    "clnet64": lambda: _perturb_batchnorm(build("clnet", 64).encoder, seed=1),
    "crnet32": lambda: _perturb_batchnorm(build("crnet", 32).encoder, seed=2),
}


@pytest.fixture(scope="module")
def encoders() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: make() for name, make in ENCODERS.items()}


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return _csi_like(64, seed=10)


@pytest.fixture(scope="module")
def evaluation() -> np.ndarray:
    return _csi_like(12, seed=11)
