"""LORA: Table IV parameter counts, the unfolded decoder, tied A, LSQ / LSZQ codewords,
joint training, and the integer UE graph through ONNX Runtime and LiteRT."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from model_test_helpers import onnx_run

from csideploy.calibration.synthetic import generate
from csideploy.models import build, get_entry
from csideploy.models.stats import count_params, figures
from csideploy.models.zoo.lora import (
    TABLE_IV,
    LoraConfig,
    quantization_spec,
    table_iv_counts,
    ue_encoder,
)

NT_NC = 1024


@pytest.fixture(scope="module")
def csi() -> torch.Tensor:
    return torch.from_numpy(generate(64, scenario="indoor", seed=5))


@pytest.mark.parametrize("cr", [4, 64])
def test_table_iv_parameter_counts(cr: int) -> None:
    model = build("lora", cr)
    encoder, decoder = TABLE_IV[cr]
    assert table_iv_counts(model) == (encoder, decoder)
    assert count_params(model.encoder) == encoder == get_entry("lora").published[cr].params_encoder
    # The paper's trainable count, (2M + 4096) NtNc + 4: A once, the shared MLP once, 4 steps.
    m = 2048 // cr
    assert count_params(model) == (2 * m + 4096) * NT_NC + 4
    row = figures(model)
    assert row.codeword_length == m and row.params_total == count_params(model)


def test_decoder_unfolds_gradient_steps_with_tied_a(csi: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = build("lora", 16, blocks=3, hidden=64)
    with torch.no_grad():
        model.decoder.step_sizes.copy_(torch.tensor([0.3, 0.2, 0.1]))
    assert model.decoder.measurement.weight is model.encoder.measurement.weight
    x = csi[:4]
    with torch.no_grad():
        v = model.encoder(x)
        a = model.encoder.measurement.weight
        assert torch.allclose(v, (x.flatten(1) - 0.5) @ a.t(), atol=1e-6)
        mlp = model.decoder.regularizer
        assert mlp(torch.zeros(1, 2048)).abs().max() == 0  # no biases: MLP(0) = 0
        z = torch.zeros(4, 2048)
        for step in (0.3, 0.2, 0.1):
            z = z - step * ((z @ a.t() - v) @ a + mlp(z))
        out = model.decoder(v)
        assert torch.allclose(out, (z + 0.5).reshape(4, 2, 32, 32), atol=1e-5)
        assert torch.equal(model(x), model.decoder(model.encoder(x)))
    assert [t.shape for t in model.decoder.iterates(v)] == [(4, 2048)] * 3


def test_gradient_of_a_comes_from_both_ends(csi: torch.Tensor) -> None:
    model = build("lora", 32, hidden=32).train()
    loss = torch.nn.functional.mse_loss(model(csi[:8]), csi[:8])
    loss.backward()
    grad = model.encoder.measurement.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert model.decoder.step_sizes.grad is not None


def _train(model: torch.nn.Module, x: torch.Tensor, steps: int, lr: float = 3e-3) -> list[float]:
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for i in range(steps):
        batch = x[(i * 32) % len(x) :][:32]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(batch), batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


@pytest.mark.parametrize(("quantizer", "bits"), [(None, 8), ("lsq", 4), ("lszq", 8)])
def test_trains_jointly_loss_falls(csi: torch.Tensor, quantizer: str | None, bits: int) -> None:
    torch.manual_seed(0)
    model = build("lora", 64, quantizer=quantizer, bits=bits, hidden=32)
    losses = _train(model, csi[:64], 20)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:3])
    if quantizer is not None:
        q = model.encoder.quantizer
        assert bool(q.initialized)
        assert q.log_scale.grad is not None and torch.isfinite(q.log_scale.grad)


@pytest.mark.parametrize(
    ("quantizer", "bits", "dtype", "qmin", "qmax"),
    [
        ("lsq", 4, torch.int8, -8, 7),
        ("lsq", 8, torch.int8, -128, 127),
        ("lszq", 4, torch.uint8, 0, 15),
        ("lszq", 8, torch.uint8, 0, 255),
    ],
)
def test_integer_codeword_and_spec(
    csi: torch.Tensor, quantizer: str, bits: int, dtype: torch.dtype, qmin: int, qmax: int
) -> None:
    torch.manual_seed(1)
    model = build("lora", 16, quantizer=quantizer, bits=bits, hidden=32)
    _train(model, csi, 2)
    with torch.no_grad():
        levels = model.encoder(csi)
        ints = ue_encoder(model)(csi)
    assert ints.dtype == dtype and ints.shape == (len(csi), 128)
    assert torch.equal(ints.float(), levels)
    assert int(ints.min()) >= qmin and int(ints.max()) <= qmax
    spec = quantization_spec(model)
    assert spec is not None
    assert (spec.scheme, spec.bits, spec.qmin, spec.qmax) == (quantizer, bits, qmin, qmax)
    assert spec.dtype == str(dtype).removeprefix("torch.")
    # The BS recovers q * scale + zero_point: the decoder's own dequantization.
    recovered = ints.float() * spec.scale + spec.zero_point
    assert torch.allclose(recovered, model.encoder.quantizer.dequantize(levels), atol=1e-6)


def test_unquantized_ue_encoder_is_the_float_encoder() -> None:
    model = build("lora", 4)
    assert ue_encoder(model) is model.encoder
    assert quantization_spec(model) is None


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="quantizer must be one of"):
        build("lora", 4, quantizer="qat")
    with pytest.raises(ValueError, match="bits must be 4 or 8"):
        build("lora", 4, quantizer="lsq", bits=6)
    with pytest.raises(ValueError, match="cr must divide"):
        LoraConfig(cr=3)
    with pytest.raises(TypeError, match="not a LORA model"):
        ue_encoder(build("crnet", 4))


def test_onnx_parity_float_and_integer_ue_graphs(csi: torch.Tensor, tmp_path: Path) -> None:
    torch.manual_seed(2)
    x = csi[:16]
    float_model = build("lora", 4)
    (out,) = onnx_run(ue_encoder(float_model), x, tmp_path / "lora_fp32.onnx")
    with torch.no_grad():
        ref = float_model.encoder(x).numpy()
    assert np.abs(out - ref).max() <= 1e-4

    model = build("lora", 4, quantizer="lszq", bits=8, hidden=32)
    _train(model, csi, 2)
    (ints,) = onnx_run(ue_encoder(model), x, tmp_path / "lora_lszq.onnx")
    with torch.no_grad():
        ref_int = ue_encoder(model)(x).numpy()
    assert ints.dtype == np.uint8 and ints.shape == ref_int.shape
    diff = np.abs(ints.astype(np.int32) - ref_int.astype(np.int32))
    # Integers: identical except where float noise sits on a rounding boundary.
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01


def test_tflite_integer_ue_graph(csi: torch.Tensor) -> None:
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    model = build("lora", 4, quantizer="lsq", bits=4, hidden=32)
    _train(model, csi, 2)
    ue = ue_encoder(model)
    x = csi[:1]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        litert_torch.config.show_progress = False
        flat = bytes(litert_torch.convert(ue, (x,)).model_content())
    interpreter = Interpreter(model_content=flat)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy())
    interpreter.invoke()
    (detail,) = interpreter.get_output_details()
    got = interpreter.get_tensor(detail["index"])
    with torch.no_grad():
        ref = ue(x).numpy()
    assert got.dtype == np.int8 and got.shape == ref.shape
    diff = np.abs(got.astype(np.int32) - ref.astype(np.int32))
    assert diff.max() <= 1 and (diff > 0).mean() <= 0.01
