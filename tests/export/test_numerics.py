"""Numerics gates on hand-made numbers: parity, NMSE drop, the per-layer table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from export_test_models import handmade_clnet, synthetic_csi

from csideploy.errors import ShapeError, ToleranceError
from csideploy.gates.numerics import (
    NmseGateError,
    Numerics,
    check_nmse_drop,
    check_parity,
    decoder_numerics,
    encoder_numerics,
    float_reference,
    format_layer_table,
)
from csideploy.metrics import nmse
from csideploy.quantize.diagnostics import LayerError


def _numerics(delta: float, max_abs: float = 0.0) -> Numerics:
    return Numerics(compared_output="codeword", max_abs_error=max_abs, nmse_db=-10 + delta,
                    float_nmse_db=-10.0, delta_nmse_db=delta, samples=100)


@pytest.fixture(scope="module")
def model_and_reference():
    model = handmade_clnet(32)
    return model, float_reference(model.encoder, model.decoder, synthetic_csi(64, seed=3))


def test_reference_is_the_float_model(model_and_reference):
    model, ref = model_and_reference
    with torch.no_grad():
        expected = model(torch.from_numpy(ref.csi)).numpy()
    np.testing.assert_allclose(ref.reconstruction, expected, atol=1e-6)
    assert ref.nmse_db == pytest.approx(nmse(ref.csi, expected))
    assert ref.convention.name == "linear" and ref.samples == 64


def test_encoder_numerics_decode_with_the_float_decoder(model_and_reference):
    model, ref = model_and_reference
    same = encoder_numerics(ref, model.decoder, ref.codewords)
    assert same.max_abs_error == 0.0 and same.delta_nmse_db == pytest.approx(0.0, abs=1e-9)
    noisy = encoder_numerics(ref, model.decoder, ref.codewords + 0.05)
    assert noisy.max_abs_error == pytest.approx(0.05, rel=1e-3)
    assert noisy.delta_nmse_db > 0.1  # a damaged codeword costs NMSE
    with pytest.raises(ShapeError, match="codeword"):
        encoder_numerics(ref, model.decoder, ref.codewords[:, :10])
    assert decoder_numerics(ref, ref.reconstruction).compared_output == "csi_hat"


def test_parity_gate():
    assert check_parity(_numerics(0.0, 5e-5), 1e-4, what="e.onnx").passed
    with pytest.raises(ToleranceError, match=r"e\.onnx: codeword differs .* up to 0.0002"):
        check_parity(_numerics(0.0, 2e-4), 1e-4, what="e.onnx")
    with pytest.raises(ToleranceError):
        check_parity(_numerics(0.0, math.inf), 1e-4, what="e.onnx")


def test_nmse_gate_names_the_worst_layers():
    rows = [LayerError("t1", "encoder.a/Conv", "Conv", 3.0, 1.0),
            LayerError("t2", "encoder.b/Gemm", "Gemm", 20.0, 30.0)]
    assert check_nmse_drop(_numerics(0.4), 0.5, what="q").passed
    assert check_nmse_drop(_numerics(40.0), math.inf, what="q").passed
    with pytest.raises(NmseGateError) as caught:
        check_nmse_drop(_numerics(0.6), 0.5, what="q.onnx", layer_table=lambda: rows)
    error = caught.value
    assert error.exit_code == 3 and error.layers == tuple(rows)
    assert "loses 0.60 dB" in str(error) and "encoder.a/Conv (1.0 dB)" in str(error)
    assert "\n" not in str(error)
    table = error.table()
    assert table.splitlines()[2].startswith("| encoder.a/Conv | t1 | 1.0 | 3.0 |")


def test_layer_table_truncates():
    rows = [LayerError(f"t{i}", f"n{i}", "Conv", float(i)) for i in range(20)]
    table = format_layer_table(rows, rows=5)
    assert "... 15 more" in table and "| n4 | t4 | - | 4.0 |" in table
