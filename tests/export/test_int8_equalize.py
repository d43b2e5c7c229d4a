"""FC input equalisation: the float function is unchanged, the int8 layer gets better."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from csideploy.quantize.equalize import EqualizedLinear, choose_scales
from csideploy.transforms.linearize import PointwiseLinear


@pytest.mark.parametrize("kind", ["linear", "pointwise"])
def test_equalised_layers_compute_the_same_float_function(kind):
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 4) if kind == "linear" else PointwiseLinear(16, 4)
    x = torch.randn(5, 16) if kind == "linear" else torch.randn(5, 16, 1)
    scales = np.random.default_rng(0).uniform(0.1, 10.0, 16)
    torch.testing.assert_close(EqualizedLinear(layer, scales)(x), layer(x), atol=1e-5,
                               rtol=1e-5)


def test_scales_are_chosen_when_input_ranges_differ_by_orders_of_magnitude():
    rng = np.random.default_rng(1)
    ranges = np.where(np.arange(256) < 8, 1.0, 0.01)  # a few strong features, many weak
    x = rng.standard_normal((80, 256)) * ranges
    w = rng.standard_normal((16, 256))
    choice = choose_scales(x, w)
    assert choice.alpha is not None
    assert choice.sqnr_db > choice.plain_sqnr_db + 3.0


def test_no_scaling_wins_when_the_inputs_are_even():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (80, 64))
    w = rng.standard_normal((8, 64))
    choice = choose_scales(x, w)
    assert choice.sqnr_db >= choice.plain_sqnr_db
