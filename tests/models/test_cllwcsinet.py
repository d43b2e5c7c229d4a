"""CLLWCsiNet: the paper's parameter counts, a flat codeword, an FC-free encoder, and AWGN
that is added only in training or when asked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from csideploy.models import build, get_entry
from csideploy.models.stats import count_params
from csideploy.models.zoo.cllwcsinet import CllwDecoder

PARAMS = {4: 70_268, 8: 66_756, 16: 42_608, 32: 32_382, 64: 27_731}
ENCODER_PARAMS = {4: 29_158, 8: 23_758, 16: 20_810, 32: 19_504, 64: 18_893}
PAPER = {4: 70_260, 8: 66_700, 16: 42_600}  # "70.26K", "66.7K", "42.6K"


def _toy_csi(n: int, seed: int = 0) -> torch.Tensor:
    """Sparse angular-delay CSI in [0, 1] around 0.5: a few delay taps, smooth in angle."""
    g = torch.Generator().manual_seed(seed)
    delay = torch.exp(-torch.arange(32.0) / 3.0)
    angle = torch.exp(
        -((torch.arange(32.0)[:, None] - torch.rand(n, 1, 1, generator=g) * 32) ** 2) / 8.0
    )
    re_im = torch.randn(n, 2, 1, 1, generator=g)
    h = re_im * angle[:, None] * delay
    return (0.5 + 0.2 * h / h.abs().amax(dim=(1, 2, 3), keepdim=True)).float()


@pytest.mark.parametrize("cr", sorted(PARAMS))
def test_parameter_counts(cr: int) -> None:
    model = build("cllwcsinet", cr)
    assert count_params(model) == PARAMS[cr]
    assert count_params(model.encoder) == ENCODER_PARAMS[cr]
    assert get_entry("cllwcsinet").published[cr].params_total == (
        PARAMS[cr] if cr in PAPER else None
    )
    if cr in PAPER:
        # The paper prints the count truncated; exact to its precision, well within 2 %.
        assert abs(PARAMS[cr] - PAPER[cr]) / PAPER[cr] < 0.02
        digits = 2 if cr == 4 else 1
        assert int(PARAMS[cr] / 10 ** (3 - digits)) / 10**digits == PAPER[cr] / 1000


@pytest.mark.parametrize(("cr", "channels"), [(4, 16), (8, 8), (16, 4), (32, 2), (64, 1)])
def test_codeword_is_flat_c_by_32(cr: int, channels: int) -> None:
    torch.manual_seed(0)
    model = build("cllwcsinet", cr)
    x = torch.rand(3, 2, 32, 32)
    with torch.no_grad():
        codeword = model.encoder(x)
        assert codeword.shape == (3, channels * 32) == (3, model.codeword_length)
        assert model.codeword_length == 2048 // cr
        out = model(x)
        assert torch.equal(out, model.decoder(codeword))
    assert out.shape == x.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_encoder_has_no_linear_and_exports_without_gemm() -> None:
    model = build("cllwcsinet", 16)
    assert not any(isinstance(m, nn.Linear) for m in model.encoder.modules())
    program = torch.onnx.export(
        model.encoder, (torch.rand(1, 2, 32, 32),), dynamo=True, external_data=False
    )
    ops = {node.op_type for node in program.model_proto.graph.node}
    assert ops.isdisjoint({"Gemm", "MatMul"})
    assert "Conv" in ops


def test_official_flat_keys_split_onto_encoder_and_decoder() -> None:
    entry = get_entry("cllwcsinet")
    model = build("cllwcsinet", 8)
    for key in model.state_dict():
        part, flat_key = key.split(".", 1)
        owners = [p for prefix, p in entry.flat_prefixes.items() if flat_key.startswith(prefix)]
        assert owners == [part], key
    # A few keys exactly as the public checkpoints spell them.
    keys = set(model.state_dict())
    assert "encoder.encoder_p2.conv1x3.conv.weight" in keys
    assert "encoder.encoder_compression.conv.third_Conv1x7.bn.running_var" in keys
    assert "decoder.remove_AGN.conv_3x3.conv.weight" in keys
    assert "decoder.decoder_refine_net.1.conv_1.third_Conv1x7.bn.weight" in keys
    assert "decoder._last_cov.firstcov2.conv.bias" in keys
    assert model.state_dict()[entry.codeword_key].shape[0] == 8


def _pair(train_snr_db: float | None) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(3)
    clean = build("cllwcsinet", 16)
    noisy = build("cllwcsinet", 16, train_snr_db=train_snr_db)
    noisy.load_state_dict(clean.state_dict())
    return clean, noisy


def test_no_noise_in_eval_mode() -> None:
    clean, noisy = _pair(40.0)
    x = _toy_csi(8)
    with torch.no_grad():
        first = noisy(x)
        assert torch.equal(first, noisy(x))
        assert torch.equal(first, clean(x))


def test_training_mode_adds_noise_at_train_snr() -> None:
    clean, noisy = _pair(10.0)
    clean.train()
    noisy.train()
    x = _toy_csi(8)
    with torch.no_grad():
        assert not torch.allclose(noisy(x), clean(x))
    assert noisy.decoder.channel.active_snr_db() == 10.0
    noisy.eval()
    assert noisy.decoder.channel.active_snr_db() is None


def test_explicit_noise_snr_in_eval_mode() -> None:
    clean, noisy = _pair(None)
    decoder = noisy.decoder
    assert isinstance(decoder, CllwDecoder)
    x = _toy_csi(8)
    with torch.no_grad():
        reference = clean(x)
        decoder.noise_snr_db = 0.0
        a, b = noisy(x), noisy(x)
        assert not torch.allclose(a, reference) and not torch.allclose(a, b)
        decoder.noise_snr_db = None
        assert torch.equal(noisy(x), reference)


def test_both_branches_decode_the_received_codeword() -> None:
    _, model = _pair(None)
    model.decoder.noise_snr_db = 5.0
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = args[0].detach().clone()

        return hook

    model.decoder.decoder_get_feedback_in_UE.register_forward_pre_hook(keep("expansion"))
    model.decoder.remove_AGN.register_forward_pre_hook(keep("denoise"))
    x = _toy_csi(4)
    with torch.no_grad():
        codeword = model.encoder(x)
        model.decoder(codeword)
    assert torch.equal(seen["expansion"], seen["denoise"])
    assert not torch.equal(seen["expansion"].flatten(1), codeword)


def test_short_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = build("cllwcsinet", 16, train_snr_db=40.0).train()
    x = _toy_csi(32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
