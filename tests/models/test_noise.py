"""The AWGN feedback channel: SNR per sample, reproducible, and absent unless asked."""

from __future__ import annotations

import math

import pytest
import torch

from csideploy.errors import CsiDeployError, ShapeError
from csideploy.models import build
from csideploy.models.noise import (
    AwgnChannel,
    add_awgn,
    attach_training_noise,
    codeword_noise,
    evaluate_with_snr,
)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0, 40.0])
def test_noise_power_follows_the_per_sample_snr(snr_db: float) -> None:
    g = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.1, 1.0, 10.0])[:, None]
    codeword = torch.randn(3, 20_000, generator=g) * scales
    noisy = add_awgn(codeword, snr_db, torch.Generator().manual_seed(1))
    measured = 10 * torch.log10(codeword.pow(2).mean(1) / (noisy - codeword).pow(2).mean(1))
    assert torch.allclose(measured, torch.full((3,), snr_db), atol=0.1)


def test_generator_makes_noise_reproducible_and_inf_is_clean() -> None:
    codeword = torch.randn(4, 64)
    a = add_awgn(codeword, 10.0, torch.Generator().manual_seed(5))
    b = add_awgn(codeword, 10.0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, codeword)
    assert add_awgn(codeword, math.inf) is codeword
    assert torch.equal(add_awgn(torch.zeros(2, 8), 0.0), torch.zeros(2, 8))


def test_bad_snr_and_shape_are_clear_errors() -> None:
    with pytest.raises(CsiDeployError, match="SNR must be"):
        add_awgn(torch.randn(2, 4), float("nan"))
    with pytest.raises(ShapeError, match=r"expected shape \(N, \.\.\.\)"):
        add_awgn(torch.randn(4), 10.0)


def test_channel_modes() -> None:
    codeword = torch.randn(2, 32)
    training_only = AwgnChannel(train_snr_db=20.0)
    training_only.eval()
    assert training_only(codeword) is codeword
    training_only.train()
    assert not torch.equal(training_only(codeword), codeword)
    always = AwgnChannel(20.0).eval()
    assert not torch.equal(always(codeword), codeword)
    assert AwgnChannel().train()(codeword) is codeword


@pytest.mark.parametrize("name", ["crnet", "csinet-cl", "cllwcsinet"])
def test_codeword_noise_wraps_any_model_and_is_removed_after(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, 16)
    x = torch.rand(2, 2, 32, 32)
    with torch.no_grad():
        clean = model(x)
        with codeword_noise(model, 0.0, generator=torch.Generator().manual_seed(0)):
            noisy = model(x)
        assert not torch.allclose(noisy, clean)
        assert torch.equal(model(x), clean)
        codeword = model.encoder(x)
        expected = model.decoder(add_awgn(codeword, 0.0, torch.Generator().manual_seed(0)))
        assert torch.equal(noisy, expected)


class _Centre(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5).flatten(1)


class _Uncentre(torch.nn.Module):
    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        return codeword.reshape(-1, 2, 32, 32) + 0.5


def test_snr_sweep_of_an_identity_codec_gives_nmse_minus_snr() -> None:
    """With codeword = CSI - 0.5 and a perfect decoder, NMSE (linear) = -SNR dB."""
    from csideploy.models.registry import CsiAutoencoder

    identity = CsiAutoencoder(_Centre(), _Uncentre(), name="identity", cr=1, codeword_length=2048)
    x = 0.5 + 0.1 * torch.randn(200, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    points = evaluate_with_snr(identity, x, [0.0, 10.0, 20.0, 40.0], "linear")
    assert [p.snr_db for p in points] == [0.0, 10.0, 20.0, 40.0]
    for point in points:
        assert point.nmse_db == pytest.approx(-point.snr_db, abs=0.1)
    assert evaluate_with_snr(identity, x, [10.0]) == [points[1]]


def test_snr_sweep_of_a_zoo_model_is_reproducible_and_clean_at_inf() -> None:
    from csideploy.transforms import model_nmse_db

    torch.manual_seed(0)
    model = build("cllwcsinet", 16, train_snr_db=40.0)
    x = torch.rand(50, 2, 32, 32)
    points = evaluate_with_snr(model, x.numpy(), [math.inf, 0.0], "linear", batch_size=16)
    assert points[0].nmse_db == pytest.approx(model_nmse_db(model, x), abs=1e-6)
    assert points[1].nmse_db != points[0].nmse_db
    assert evaluate_with_snr(model, x, [0.0], batch_size=16) == points[1:]
    assert not model.training
    with pytest.raises(CsiDeployError, match="no SNR given"):
        evaluate_with_snr(model, x, [])


def test_training_noise_hook_for_any_model() -> None:
    torch.manual_seed(0)
    model = build("crnet-cl", 16)
    x = torch.rand(4, 2, 32, 32)
    with torch.no_grad():
        clean = model(x)
        handle = attach_training_noise(model, 0.0)
        assert torch.equal(model(x), clean)  # eval mode: no noise
        model.train()
        noisy_train = model(x)
        model.eval()
        handle.remove()
    reference = build("crnet-cl", 16)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(noisy_train, reference.train()(x))
    with pytest.raises(CsiDeployError, match="already adds training noise"):
        attach_training_noise(build("cllwcsinet", 16, train_snr_db=40.0), 10.0)


def test_training_noise_context_for_a_run() -> None:
    from csideploy.models.noise import built_in_training_snr, training_noise

    torch.manual_seed(0)
    model = build("clnet", 16).train()
    x = torch.rand(4, 2, 32, 32)
    with torch.no_grad():
        with training_noise(model, None):
            assert not model.decoder._forward_pre_hooks
        with training_noise(model, 0.0):
            assert len(model.decoder._forward_pre_hooks) == 1
            assert not torch.allclose(model(x), model(x))
        assert not model.decoder._forward_pre_hooks
        with pytest.raises(RuntimeError), training_noise(model, 0.0):
            raise RuntimeError("interrupted run")
        assert not model.decoder._forward_pre_hooks

    own = build("cllwcsinet", 16, train_snr_db=20.0)
    assert built_in_training_snr(own) == 20.0 and built_in_training_snr(model) is None
    for snr in (None, 20.0):
        with training_noise(own, snr):
            assert not own.decoder._forward_pre_hooks  # its own channel does the work
    with (
        pytest.raises(CsiDeployError, match=r"at 20\.0 dB, not at the 10\.0 dB"),
        training_noise(own, 10.0),
    ):
        pass
