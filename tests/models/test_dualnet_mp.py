"""DualNet-MP: circular convolutions (and their ONNX / TFLite export), the phase identity,
SSQ codewords, feedback bits (eq. 15), parameter counts, UL side information and the
two-stage training."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from model_test_helpers import onnx_run
from torch.nn import functional as F

from csideploy.calibration.paired import generate_paired
from csideploy.errors import ShapeError
from csideploy.models import build
from csideploy.models.stats import count_params, figures
from csideploy.models.zoo.dualnet_mp import (
    PAPER_PARAMS_CR8,
    CircularConv2d,
    DualNetMP,
    circular_pad,
    csi_features,
    feedback_bits,
    fit_magnitude_gain,
    fit_sign_positions,
    param_breakdown,
    smape_loss,
    train_dualnet_mp,
    ue_encoder,
    ue_graph,
    ul_magnitude,
)


@pytest.fixture(scope="module")
def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    dl, ul = generate_paired(32, scenario="indoor", seed=3)
    return torch.from_numpy(dl), torch.from_numpy(ul)


class UeWithFeatures(torch.nn.Module):
    """The UE graph plus its float pre-quantization codewords (for a strict float parity)."""

    def __init__(self, model: DualNetMP) -> None:
        super().__init__()
        self.ue = ue_encoder(model)

    def forward(self, csi: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc = self.ue.encoder
        features = enc.ue_features(csi)
        floats = (enc.magnitude.squashed(features.magnitude), enc.phase.squashed(features.cos))
        return (*floats, *self.ue(csi))


def test_circular_pad_wraps_both_axes() -> None:
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    padded = circular_pad(x, 2)
    assert torch.equal(padded, F.pad(x, (2, 2, 2, 2), mode="circular"))
    assert torch.equal(padded[..., 2:-2, 2:-2], x)
    assert torch.equal(circular_pad(x, 0), x)


def test_circular_conv_is_shift_equivariant_on_the_torus() -> None:
    torch.manual_seed(0)
    conv = CircularConv2d(2, 3, 7)
    x = torch.randn(1, 2, 32, 32)
    shifted = torch.roll(x, shifts=(5, -9), dims=(2, 3))
    with torch.no_grad():
        assert torch.allclose(
            conv(shifted), torch.roll(conv(x), shifts=(5, -9), dims=(2, 3)), atol=1e-5
        )
        # The same as convolving the periodic extension of the input.
        tiled = x.repeat(1, 1, 3, 3)[..., 32 - 3 : 64 + 3, 32 - 3 : 64 + 3]
        assert torch.allclose(conv(x), F.conv2d(tiled, conv.conv.weight, conv.conv.bias), atol=1e-5)


def test_cos_and_sign_determine_the_phase() -> None:
    rng = np.random.default_rng(0)
    h = (rng.standard_normal(4096) + 1j * rng.standard_normal(4096)) * 0.1
    # Include the edge cases: zero, positive / negative reals (sin = 0), pure imaginaries.
    h[:6] = [0, 0.2, -0.2, 0.3j, -0.3j, -1e-9]
    csi = np.stack([h.real, h.imag]).reshape(2, 64, 64)
    x = torch.from_numpy(csi[None].astype(np.float32) + 0.5).reshape(1, 2, 64, 64)
    f = csi_features(x)
    phase = torch.arccos(f.cos.clamp(-1, 1)) * f.sign
    angle = torch.angle(torch.complex(x[:, 0:1] - 0.5, x[:, 1:2] - 0.5))
    # Sign convention: sin >= 0 -> +1, so angle pi (negative reals) comes back as +pi.
    assert torch.allclose(phase, angle, atol=2e-3)
    assert torch.equal(f.sign.abs(), torch.ones_like(f.sign))
    assert float(f.cos.flatten()[0]) == 1.0  # H = 0: angle 0
    h_t = torch.complex(x[:, 0:1] - 0.5, x[:, 1:2] - 0.5)
    assert torch.allclose(f.magnitude, np.sqrt(2) * h_t.abs(), atol=1e-6)


def test_parameters_and_feedback_bits_follow_the_paper() -> None:
    model = build("dualnet-mp", 8)
    parts = param_breakdown(model)
    total = count_params(model)
    assert parts["total"] == total == 829_064
    # The paper: "C-CNN with only 826K parameters" (CR_PHA = 1/8); within 0.5 %.
    assert abs(total - PAPER_PARAMS_CR8) / PAPER_PARAMS_CR8 < 0.005
    assert total == count_params(model.encoder) + count_params(model.decoder)
    assert parts["phase_encoder"] == 8_849 + 1024 * 128 + 128  # 4 C-convs + FC to 128

    bits8 = feedback_bits(model)
    # Sec. IV-C: CR_PHA = 1/8 sends 128 8-bit phase codewords (1024 bits); Rs = 0.25 signs.
    assert (bits8.phase_codeword, bits8.sign) == (1024, 256)
    assert bits8.magnitude == 8 * 256 and bits8.total == 2048 + 1024 + 256
    # Footnote 4: 0.625 bits per phase entry at CR_PHA = 1/16 with Rs = 0.125.
    assert feedback_bits(build("dualnet-mp", 16)).phase_bits_per_entry == 0.625
    custom = build("dualnet-mp", 16, sign_ratio=0.25, phase_bits=6, magnitude_reduction=8)
    assert feedback_bits(custom).phase == 6 * 64 + 256
    assert custom.codeword_length == 128 + 64 + 256


def test_registry_contract_and_side_information(pairs: tuple[torch.Tensor, torch.Tensor]) -> None:
    dl, ul = pairs
    torch.manual_seed(0)
    model = build("dualnet-mp", 16)
    with torch.no_grad():
        code = model.encoder(dl[:4])
        assert code.shape == (4, model.codeword_length) == (4, 256 + 64 + 128)
        assert torch.equal(model(dl[:4], ul[:4]), model.decoder(code, ul[:4]))
        with_side = model(dl[:4], ul[:4])
        without = model(dl[:4])
    assert with_side.shape == dl[:4].shape
    assert not torch.allclose(with_side, without)  # the UL magnitude does enter the decoder
    row = figures(model)  # what `csideploy models` prints
    assert row.params_total == count_params(model) and row.codeword_length == 448
    with pytest.raises(ShapeError, match="codeword"):
        model.decoder(code[:, :10])
    with pytest.raises(ShapeError, match="ul_csi"):
        model.decoder(code, ul[:4, :, :16])


def test_ue_encoder_three_integer_outputs(pairs: tuple[torch.Tensor, torch.Tensor]) -> None:
    dl, _ = pairs
    model = build("dualnet-mp", 8)
    with torch.no_grad():
        mag, pha, sign = ue_encoder(model)(dl)
        flat = model.encoder(dl)
    assert (mag.dtype, pha.dtype, sign.dtype) == (torch.int8, torch.int8, torch.uint8)
    assert mag.shape == (32, 256) and pha.shape == (32, 128) and sign.shape == (32, 256)
    assert torch.equal(torch.cat([mag.float(), pha.float(), sign.float()], 1), flat)
    assert set(sign.unique().tolist()) <= {0, 1}
    # The sign bits are the signs of sin(angle H) at the fed-back positions.
    im = (dl[:, 1] - 0.5).flatten(1)[:, model.encoder.sign_positions]
    assert torch.equal(sign.bool(), im >= 0)
    model.train()
    soft = model.encoder(dl[:2])
    assert not torch.equal(soft[:, :384], soft[:, :384].round())  # SSQ is soft in training


def test_sign_positions_fit_and_validate(pairs: tuple[torch.Tensor, torch.Tensor]) -> None:
    dl, _ = pairs
    model = build("dualnet-mp", 16)
    default = model.encoder.sign_positions.clone()
    assert torch.equal(default % 32 < 4, torch.ones(128, dtype=torch.bool))  # 4 delay taps
    chosen = fit_sign_positions(model, dl)
    power = csi_features(dl).magnitude.mean(dim=(0, 1)).flatten()
    assert torch.equal(chosen, torch.topk(power, 128).indices.sort().values)
    assert torch.equal(model.decoder.sign_positions, chosen)
    with pytest.raises(ShapeError, match="expected 128"):
        model.set_sign_positions(torch.arange(10))
    with pytest.raises(ValueError, match="distinct"):
        model.set_sign_positions(torch.zeros(128, dtype=torch.long))


def test_magnitude_gain_is_fitted_and_shared_by_both_ends(
    pairs: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    from csideploy.models.checkpoint import load_model, save_checkpoint

    dl, ul = pairs
    model = build("dualnet-mp", 8)
    assert float(model.encoder.magnitude_gain) == float(model.decoder.magnitude_gain) == 1.0
    gain = fit_magnitude_gain(model, dl)
    magnitude = csi_features(dl).magnitude
    assert gain == pytest.approx(1.0 / float(magnitude.pow(2).mean().sqrt()), rel=1e-5)
    assert 20.0 < gain < 500.0  # sparse CSI: RMS of sqrt(2)|H| far below its [0, 1] range
    assert float(model.decoder.magnitude_gain) == gain
    seen = model.encoder.ue_features(dl).magnitude
    assert float(seen.pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-4)
    assert torch.allclose(ul_magnitude(ul, gain), ul_magnitude(ul) * gain)
    assert ue_graph(model).notes["magnitude_gain"] == pytest.approx(gain)
    path = tmp_path / "dual.pt"
    save_checkpoint(path, model)
    reloaded = load_model("dualnet-mp", checkpoint=path).model
    assert float(reloaded.encoder.magnitude_gain) == pytest.approx(gain)
    with torch.no_grad():
        assert torch.equal(reloaded(dl[:4], ul[:4]), model.eval()(dl[:4], ul[:4]))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite and positive"):
            model.set_magnitude_gain(bad)
    with pytest.raises(ValueError, match="every CSI entry is zero"):
        fit_magnitude_gain(model, torch.full((2, 2, 32, 32), 0.5))


def test_stage_one_learns_the_sparse_magnitude() -> None:
    """Stage 1 beats the best constant magnitude on held-out built-in data (it once collapsed
    to an all-zero output there)."""
    dl, ul = (torch.from_numpy(a) for a in generate_paired(300, scenario="indoor", seed=5))
    torch.manual_seed(0)
    model = build("dualnet-mp", 8)
    train_dualnet_mp(model, dl[:200], ul[:200], 4, 0, batch_size=50)
    gain = model.decoder.magnitude_gain
    truth = csi_features(dl[200:], gain).magnitude
    with torch.no_grad():
        code = model.encoder.magnitude(truth)
        estimate = model.decoder.magnitude(
            code / model.decoder.magnitude_levels, ul_magnitude(ul[200:], gain)
        )

    def db(error: torch.Tensor) -> float:
        return float(10 * torch.log10(error.pow(2).sum() / truth.pow(2).sum()))

    best_constant = db(truth - truth.mean())
    assert db(estimate - truth) < best_constant - 1.5


def test_smape_equals_the_mse_of_the_complex_estimate() -> None:
    torch.manual_seed(0)
    m, m_hat = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    phi, phi_hat = torch.rand(2, 1, 4, 4) * 6 - 3, torch.rand(2, 1, 4, 4) * 6 - 3
    h = torch.polar(m, phi)
    h_hat = torch.polar(m_hat, phi_hat)
    loss = smape_loss(m, phi.cos(), phi.sin(), m_hat, phi_hat.cos(), phi_hat.sin())
    assert float(loss) == pytest.approx(float((h - h_hat).abs().pow(2).mean()), rel=1e-5)


def test_two_stage_training_losses_fall(pairs: tuple[torch.Tensor, torch.Tensor]) -> None:
    dl, ul = pairs[0][:16], pairs[1][:16]
    torch.manual_seed(0)
    model = build("dualnet-mp", 16)
    mag_before = [p.detach().clone() for p in model.decoder.magnitude.parameters()]
    result = train_dualnet_mp(model, dl, ul, 3, 3, batch_size=8, lr=2e-3)
    assert len(result.stage1_loss) == len(result.stage2_loss) == 3
    assert all(np.isfinite(result.stage1_loss + result.stage2_loss))
    assert result.stage1_loss[-1] < result.stage1_loss[0]
    assert result.stage2_loss[-1] < result.stage2_loss[0]
    assert not model.training
    assert all(p.requires_grad for p in model.parameters())
    # Stage 2 must not move the magnitude branch: re-run only stage 2 and compare.
    mag_after_1 = [p.detach().clone() for p in model.decoder.magnitude.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(mag_before, mag_after_1, strict=True))
    train_dualnet_mp(model, dl[:8], ul[:8], 0, 1, batch_size=8, fit_to_data=False)
    assert all(
        torch.equal(a, b)
        for a, b in zip(mag_after_1, model.decoder.magnitude.parameters(), strict=True)
    )
    with pytest.raises(ShapeError, match="pair up"):
        train_dualnet_mp(model, dl, ul[:5], 1, 1)


def _check_outputs(got: list[np.ndarray], ref: tuple[torch.Tensor, ...]) -> None:
    assert len(got) == len(ref) == 5
    for g, r in zip(got[:2], ref[:2], strict=True):
        assert g.dtype == np.float32 and np.abs(g - r.numpy()).max() <= 1e-4
    for g, r in zip(got[2:], ref[2:], strict=True):
        assert g.dtype == r.numpy().dtype and g.shape == tuple(r.shape)
        diff = np.abs(g.astype(np.int32) - r.numpy().astype(np.int32))
        # Integers: identical except where float noise sits on a rounding boundary.
        assert diff.max() <= 1 and (diff > 0).mean() <= 0.01
    assert np.array_equal(got[4], ref[4].numpy())  # sign bits need no arithmetic


def test_onnx_parity_of_the_ue_graph(
    pairs: tuple[torch.Tensor, torch.Tensor], tmp_path: Path
) -> None:
    dl, _ = pairs
    torch.manual_seed(1)
    model = build("dualnet-mp", 8)
    model.set_magnitude_gain(75.0)  # the fitted gain of the built-in data is about 76
    module = UeWithFeatures(model).eval()
    got = onnx_run(module, dl[:8], tmp_path / "dualnet_ue.onnx")
    with torch.no_grad():
        ref = module(dl[:8])
    _check_outputs(got, ref)
    import onnx

    ops = {node.op_type for node in onnx.load(str(tmp_path / "dualnet_ue.onnx")).graph.node}
    assert {"Conv", "Concat", "Slice"} <= ops and "Pad" not in ops


def test_tflite_parity_of_the_ue_graph(pairs: tuple[torch.Tensor, torch.Tensor]) -> None:
    import litert_torch
    from ai_edge_litert.interpreter import Interpreter

    dl, _ = pairs
    torch.manual_seed(2)
    model = build("dualnet-mp", 16)
    model.set_magnitude_gain(75.0)
    module = UeWithFeatures(model).eval()
    x = dl[:1]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        litert_torch.config.show_progress = False
        flat = bytes(litert_torch.convert(module, (x,)).model_content())
    interpreter = Interpreter(model_content=flat)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy())
    interpreter.invoke()
    got = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    with torch.no_grad():
        ref = module(x)
    _check_outputs(got, ref)
