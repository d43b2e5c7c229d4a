"""The two-sided INT8 gate: an NMSE that "improves" does not pass a codeword that moved."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from csideploy.gates.fidelity import (
    FidelityGateError,
    FidelityLimits,
    check_fidelity,
)
from csideploy.gates.numerics import check_nmse_drop, encoder_numerics, float_reference
from csideploy.metrics import sqnr_db


class _Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def _poor_model(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A linear CR 1/64 autoencoder whose decoder amplifies: its reconstruction is worse
    than all-zero CSI (NMSE > 0 dB), and a codeword near zero decodes to all-zero CSI."""
    torch.manual_seed(seed)
    encoder = nn.Sequential(_Flatten(), nn.Linear(2048, 32))
    decoder_fc = nn.Linear(32, 2048)
    with torch.no_grad():
        decoder_fc.weight.mul_(20.0)
        decoder_fc.bias.fill_(0.5)
    decoder = nn.Sequential(decoder_fc, nn.Unflatten(1, (2, 32, 32)))
    return encoder.eval(), decoder.eval()


def test_an_int8_file_whose_nmse_improves_but_codeword_moved_fails_the_fidelity_gate():
    rng = np.random.default_rng(3)
    csi = (0.5 + 0.05 * rng.standard_normal((64, 2, 32, 32))).astype(np.float32)
    encoder, decoder = _poor_model()
    reference = float_reference(encoder, decoder, csi, convention="linear")
    assert reference.nmse_db > 3.0  # a poor model
    moved = (0.01 * reference.codewords).astype(np.float32)  # the codeword collapsed
    numerics = encoder_numerics(reference, decoder, moved)

    assert numerics.delta_nmse_db < -3.0  # "better" than float against the ground truth
    nmse_gate = check_nmse_drop(numerics, 0.3, what="encoder.int8.onnx")
    assert nmse_gate.passed
    assert numerics.codeword_sqnr_db == pytest.approx(sqnr_db(reference.codewords,
                                                                       moved))
    assert numerics.codeword_sqnr_db < 1.0
    assert numerics.fidelity_nmse_db > -1.0
    with pytest.raises(FidelityGateError, match=r"encoder\.int8\.onnx: moved away from the "
                       r"float model: codeword SQNR 0\.\d dB below 15 dB; reconstruction NMSE "
                       r"against the float model -?0\.\d dB above -15 dB"):
        check_fidelity(numerics, FidelityLimits(), what="encoder.int8.onnx")


def test_a_faithful_int8_codeword_passes_both_sides():
    rng = np.random.default_rng(4)
    csi = (0.5 + 0.05 * rng.standard_normal((64, 2, 32, 32))).astype(np.float32)
    encoder, decoder = _poor_model(1)
    reference = float_reference(encoder, decoder, csi, convention="linear")
    noise = 1e-3 * np.abs(reference.codewords).max() * rng.standard_normal(
        reference.codewords.shape)
    numerics = encoder_numerics(reference, decoder, (reference.codewords + noise).astype(
        np.float32))
    gate = check_fidelity(numerics, FidelityLimits(), what="encoder.int8.onnx")
    assert gate.passed and gate.measured > 40.0
    assert numerics.fidelity_nmse_db < -30.0
