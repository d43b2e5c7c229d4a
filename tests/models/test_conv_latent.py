"""The FC-free -cl variants: exact parameter counts, no Linear in the encoder, trainable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from csideploy.models import build, get_entry
from csideploy.models.stats import count_params, figures
from csideploy.transforms import replace_sigmoid

PARAMS = {
    "csinet-cl": {4: 17_900, 8: 10_716, 16: 7_124, 32: 5_328, 64: 4_430},
    "crnet-cl": {4: 17_622, 8: 10_438, 16: 6_846, 32: 5_050, 64: 4_152},
    "clnet-cl": {4: 16_742, 8: 9_558, 16: 5_966, 32: 4_170, 64: 3_272},
}
# Table III of the CLLWCsiNet paper, in thousands as printed.
TABLE_III = {
    "csinet-cl": {4: "17.9", 8: "10.71", 16: "7.12"},
    "crnet-cl": {4: "17.62", 8: "10.43", 16: "6.84"},
}
VARIANTS = sorted(PARAMS)


def _truncated_thousands(n: int, decimals: int) -> str:
    return f"{int(n / 10 ** (3 - decimals)) / 10**decimals:.{decimals}f}"


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("cr", [4, 8, 16, 32, 64])
def test_parameter_counts(name: str, cr: int) -> None:
    model = build(name, cr)
    assert count_params(model) == PARAMS[name][cr]
    published = TABLE_III.get(name, {}).get(cr)
    if published is not None:
        decimals = len(published.split(".")[1])
        assert _truncated_thousands(PARAMS[name][cr], decimals) == published
        assert get_entry(name).published[cr].params_total == PARAMS[name][cr]
    # The latent pair costs 898 C + 128 parameters on top of a CR-independent trunk.
    channels = 64 // cr
    assert PARAMS[name][cr] - 898 * channels == PARAMS[name][64] - 898


@pytest.mark.parametrize("name", VARIANTS)
def test_far_fewer_parameters_than_the_fc_model(name: str) -> None:
    parent = name.removesuffix("-cl")
    assert count_params(build(name, 4)) * 100 < count_params(build(parent, 4))


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("cr", [4, 64])
def test_flat_codeword_and_split(name: str, cr: int) -> None:
    torch.manual_seed(0)
    model = build(name, cr)
    x = torch.rand(3, 2, 32, 32)
    with torch.no_grad():
        codeword = model.encoder(x)
        assert codeword.shape == (3, 2048 // cr) == (3, model.codeword_length)
        out = model(x)
        assert torch.equal(out, model.decoder(codeword))
    assert out.shape == x.shape
    assert model.state_dict()[get_entry(name).codeword_key].shape[0] == 64 // cr


@pytest.mark.parametrize("name", [*VARIANTS, "cllwcsinet"])
def test_encoder_has_no_linear_and_onnx_has_no_gemm(name: str) -> None:
    model = build(name, 16)
    assert not any(isinstance(m, nn.Linear) for m in model.encoder.modules())
    program = torch.onnx.export(
        model.encoder, (torch.rand(1, 2, 32, 32),), dynamo=True, external_data=False
    )
    ops = {node.op_type for node in program.model_proto.graph.node}
    assert ops.isdisjoint({"Gemm", "MatMul"}), ops


def test_clnet_cl_takes_the_hard_sigmoid_too() -> None:
    report = replace_sigmoid(build("clnet-cl", 8))
    assert [r.path for r in report.replaced] == ["encoder.sa.sigmoid", "encoder.se.fc.3"]


def test_encoder_macs_are_a_fraction_of_the_fc_model() -> None:
    for name in VARIANTS:
        cl, fc = figures(build(name, 4)), figures(build(name.removesuffix("-cl"), 4))
        assert cl.macs_encoder < fc.macs_encoder
        assert cl.params_encoder * 100 < fc.params_encoder


@pytest.mark.parametrize("name", VARIANTS)  # cllwcsinet: tests/models/test_cllwcsinet.py
def test_short_training_lowers_the_loss(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, 16).train()
    g = torch.Generator().manual_seed(1)
    delay = torch.exp(-torch.arange(32.0) / 4.0)
    x = (0.5 + 0.15 * torch.randn(32, 2, 32, 1, generator=g) * delay).clamp(0, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), x)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
