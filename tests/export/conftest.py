"""Session fixtures for the export tests (the model builders live in export_test_models)."""

from __future__ import annotations

import numpy as np
import pytest
from export_test_models import small_model, synthetic_csi

from csideploy.models import CsiAutoencoder


@pytest.fixture(scope="session")
def clnet64() -> CsiAutoencoder:
    return small_model("clnet", 64)


@pytest.fixture(scope="session")
def eval_csi() -> np.ndarray:
    return synthetic_csi(64, seed=11)
