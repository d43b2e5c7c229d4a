"""NMSE conventions, rho and SQNR on small cases whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from csideploy.errors import ShapeError
from csideploy.metrics import (
    NMSE_CONVENTIONS,
    nmse,
    nmse_linear_per_sample,
    rho,
    sqnr_db,
)


def _pair(ratios: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """x, x_hat whose per-sample NMSE are exactly `ratios`.

    Each sample is 0.5 everywhere except one entry 0.5 + 0.4 (power 0.16); x_hat moves that
    entry by 0.4 * sqrt(ratio), so the error power is 0.16 * ratio.
    """
    n = len(ratios)
    x = np.full((n, 2, 32, 32), 0.5)
    x[:, 0, 3, 1] = 0.9
    x_hat = x.copy()
    x_hat[:, 0, 3, 1] -= 0.4 * np.sqrt(np.asarray(ratios))
    return x, x_hat


def test_per_sample_ratios() -> None:
    x, x_hat = _pair([0.01, 0.1])
    assert nmse_linear_per_sample(x, x_hat) == pytest.approx([0.01, 0.1])


def test_linear_convention_is_db_of_the_mean_ratio() -> None:
    x, x_hat = _pair([0.01, 0.1])
    # mean ratio 0.055 -> 10 log10(0.055) = -12.5964 dB
    assert nmse(x, x_hat) == pytest.approx(10 * math.log10(0.055))
    assert nmse(x, x_hat) == pytest.approx(-12.5964, abs=1e-4)


def test_sample_db_convention_is_the_mean_of_db_values() -> None:
    x, x_hat = _pair([0.01, 0.1])
    # -20 dB and -10 dB -> -15 dB
    assert nmse(x, x_hat, convention="sample_db") == pytest.approx(-15.0)


def test_batch_db_convention_averages_db_per_batch() -> None:
    x, x_hat = _pair([0.01, 0.1, 0.001])
    # batches of 2: [0.01, 0.1] -> 10 log10(0.055) = -12.5964; [0.001] -> -30; mean -21.2982
    expected = (10 * math.log10(0.055) - 30.0) / 2
    assert nmse(x, x_hat, convention="batch_db", batch_size=2) == pytest.approx(expected)
    # one batch holding everything is the linear convention; batches of one are sample_db
    assert nmse(x, x_hat, convention="batch_db", batch_size=200) == pytest.approx(nmse(x, x_hat))
    assert nmse(x, x_hat, convention="batch_db", batch_size=1) == pytest.approx(
        nmse(x, x_hat, convention="sample_db")
    )


def test_conventions_are_named_and_described() -> None:
    assert set(NMSE_CONVENTIONS) == {"linear", "batch_db", "sample_db"}
    assert all(isinstance(d, str) and d for d in NMSE_CONVENTIONS.values())
    x, x_hat = _pair([0.1])
    with pytest.raises(ValueError, match=r"unknown NMSE convention 'mean'.*linear"):
        nmse(x, x_hat, convention="mean")
    with pytest.raises(ValueError, match="batch_size"):
        nmse(x, x_hat, convention="batch_db", batch_size=0)


def test_torch_tensors_are_accepted() -> None:
    x, x_hat = _pair([0.01, 0.1])
    got = nmse(torch.tensor(x, dtype=torch.float32), torch.tensor(x_hat, requires_grad=True))
    assert got == pytest.approx(10 * math.log10(0.055), abs=1e-4)


def test_perfect_reconstruction_is_minus_infinity() -> None:
    x, _ = _pair([0.1])
    assert nmse(x, x) == -math.inf


def test_nmse_shape_errors_name_both_shapes() -> None:
    a = np.full((3, 2, 32, 32), 0.5)
    with pytest.raises(ShapeError, match=r"\(3, 2, 32, 32\).*\(2, 2, 32, 32\)"):
        nmse(a, a[:2])
    with pytest.raises(ShapeError, match=r"\(2, 32, 32\)"):
        nmse(a[0], a[0])
    with pytest.raises(ShapeError):
        nmse(a[:0], a[:0])


# --------------------------------------------------------------------------- rho


def _hf_of(x: np.ndarray) -> np.ndarray:
    """HF_all that x reconstructs perfectly, built the way the evaluator reads x (by hand)."""
    ha = (x[:, 0] - 0.5) + 1j * (x[:, 1] - 0.5)
    padded = np.concatenate([ha, np.zeros((len(x), 32, 257 - 32))], axis=2)
    return np.fft.fft(padded, axis=2)[:, :, :125]


def test_rho_is_one_for_perfect_reconstruction() -> None:
    x = np.random.default_rng(0).uniform(0.4, 0.6, size=(4, 2, 32, 32))
    hf = _hf_of(x)
    assert rho(hf, x) == pytest.approx(1.0, abs=1e-12)
    assert rho(hf.reshape(4, 4000), x) == pytest.approx(1.0, abs=1e-12)  # HF_all layout
    assert rho(x, hf) == pytest.approx(1.0, abs=1e-12)  # either argument order
    assert rho(3j * hf, x) == pytest.approx(1.0, abs=1e-12)  # blind to scale and phase
    assert rho(torch.tensor(hf), torch.tensor(x)) == pytest.approx(1.0, abs=1e-12)


def test_rho_hand_computed_angle_mismatch() -> None:
    # x_hat: energy only at delay 0, angle 0 -> spectrum a = e_0 on every subcarrier.
    # HF: b = e_0 + e_1 on every subcarrier -> |b^H a| / (|a| |b|) = 1 / sqrt(2).
    x_hat = np.full((1, 2, 32, 32), 0.5)
    x_hat[0, 0, 0, 0] = 0.8
    hf = np.zeros((1, 32, 125), dtype=complex)
    hf[0, 0, :] = 1.0
    hf[0, 1, :] = 1.0
    assert rho(hf, x_hat) == pytest.approx(1 / math.sqrt(2))


def test_rho_shape_and_dtype_errors() -> None:
    x = np.full((2, 2, 32, 32), 0.6)
    with pytest.raises(ShapeError, match=r"\(3, 32, 125\).*\(2, 2, 32, 32\)"):
        rho(np.ones((3, 32, 125), dtype=complex), x)
    with pytest.raises(ShapeError, match="must be complex"):
        rho(np.ones((2, 32, 125)), x)
    with pytest.raises(ShapeError, match=r"\(2, 32, 32\)"):
        rho(np.ones((2, 32, 125), dtype=complex), x[:, 0])


# --------------------------------------------------------------------------- SQNR


def test_sqnr_hand_computed() -> None:
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    test = ref + np.array([0.1, 0.0, 0.0, 0.0])
    # signal 1 + 4 + 9 + 16 = 30, noise 0.01 -> 10 log10(3000) = 34.771 dB
    assert sqnr_db(ref, test) == pytest.approx(10 * math.log10(3000))
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(torch.tensor(ref), torch.tensor(test)) == pytest.approx(34.7712, abs=1e-4)


def test_sqnr_shape_error_names_both_shapes() -> None:
    with pytest.raises(ShapeError, match=r"\(4,\).*\(3,\)"):
        sqnr_db(np.ones(4), np.ones(3))


def test_sqnr_takes_several_outputs_together_and_names_degenerate_cases() -> None:
    ref = [np.array([3.0, 4.0]), np.array([[0.0]])]
    test = [np.array([3.0, 4.0]), np.array([[0.5]])]
    assert sqnr_db(ref, test) == pytest.approx(10 * math.log10(25 / 0.25))
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
    assert sqnr_db(np.ones(3), np.array([1.0, np.inf, 1.0])) == -math.inf
