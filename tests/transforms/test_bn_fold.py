"""BatchNorm folding: exact parity on every zoo encoder, and honest reports of what is left."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from csideploy.models import build, get_entry, list_models
from csideploy.models.blocks import DelayBatchNorm
from csideploy.transforms import DelayAffine, fold_batchnorm, fold_batchnorm_report


def _randomise_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial eval statistics and affine parameters in every BatchNorm."""
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) * 2.0 + 0.05)
            m.weight.data.copy_(torch.randn(n, generator=generator))
            m.bias.data.copy_(torch.randn(n, generator=generator))


def _batchnorms(module: nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


ZOO = [(name, get_entry(name).crs[-1]) for name in list_models()]


@pytest.mark.parametrize(("name", "cr"), ZOO)
def test_folded_encoder_matches_original(name: str, cr: int) -> None:
    torch.manual_seed(0)
    model = build(name, cr)
    _randomise_batchnorm(model)
    report = fold_batchnorm_report(model.encoder)
    folded = report.module
    assert not folded.training
    x = torch.rand(8, *get_entry(name).input_spec.shape)
    with torch.no_grad():
        expected = model.encoder(x)
        got = folded(x)
    assert float((got - expected).abs().max()) < 1e-5
    # Every BatchNorm is folded, converted, or reported with a reason.
    before = set(_batchnorms(model.encoder))
    accounted = {p.bn for p in report.folded} | {n.path for n in report.not_folded}
    accounted |= {f"{c}.bn" for c in report.converted}
    assert before == accounted
    assert set(_batchnorms(folded)) == {n.path for n in report.not_folded}
    if before:
        assert report.folded or report.converted, f"{name}: no BatchNorm removed"


def test_zoo_conv_bn_blocks_are_all_folded() -> None:
    model = build("crnet", 4)
    report = fold_batchnorm_report(model.encoder)
    assert report.fully_folded
    assert [(p.conv, p.bn) for p in report.folded][:2] == [
        ("encoder1.conv3x3_bn.conv", "encoder1.conv3x3_bn.bn"),
        ("encoder1.conv1x9_bn.conv", "encoder1.conv1x9_bn.bn"),
    ]
    assert isinstance(report.module.encoder1.conv3x3_bn.bn, nn.Identity)
    assert report.module.encoder1.conv3x3_bn.conv.bias is not None
    # The input module keeps its BatchNorms.
    assert isinstance(model.encoder.encoder1.conv3x3_bn.bn, nn.BatchNorm2d)


def test_csinet_delay_batchnorm_becomes_a_per_delay_affine() -> None:
    model = build("csinet", 16)
    _randomise_batchnorm(model, seed=3)
    report = fold_batchnorm_report(model.encoder)
    assert report.folded == ()
    assert report.converted == ("conv_bn.bn",)
    assert not report.fully_folded
    affine = report.module.conv_bn.bn
    assert isinstance(affine, DelayAffine) and affine.scale.shape == (1, 1, 1, 32)
    assert not any(isinstance(m, DelayBatchNorm) for m in report.module.modules())
    # The whole decoder too: its RefineNets carry delay BatchNorms.
    decoder = fold_batchnorm_report(model.decoder)
    assert len(decoder.converted) == 6
    codeword = torch.randn(4, model.codeword_length)
    with torch.no_grad():
        assert float((decoder.module(codeword) - model.decoder(codeword)).abs().max()) < 1e-5


def test_batchnorm_not_fed_by_a_lone_conv_is_reported() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.shared = nn.Conv2d(4, 4, 1)
            self.bn_shared = nn.BatchNorm2d(4)
            self.up = nn.ConvTranspose2d(4, 4, 1)
            self.bn_up = nn.BatchNorm2d(4)
            self.bn_cat = nn.BatchNorm2d(8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            s = self.shared(y)
            a = self.bn_shared(s) + s
            b = self.bn_up(self.up(y))
            return self.bn_cat(torch.cat((a, b), dim=1))

    block = Block()
    _randomise_batchnorm(block, seed=5)
    report = fold_batchnorm_report(block)
    assert report.folded == ()
    reasons = {n.path: n.reason for n in report.not_folded}
    assert "also used elsewhere" in reasons["bn_shared"]
    assert "transposed convolution" in reasons["bn_up"]
    assert "not a convolution" in reasons["bn_cat"]
    x = torch.rand(2, 2, 8, 8)
    with torch.no_grad():
        assert torch.allclose(report.module(x), block.eval()(x), atol=1e-6)


def test_untraceable_module_falls_back_to_structural_pairs() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU())
            self.extra = nn.BatchNorm2d(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            return self.extra(y) if float(y.mean()) > 0 else y

    module = DataDependent()
    _randomise_batchnorm(module, seed=7)
    report = fold_batchnorm_report(module)
    assert not report.traced
    assert [(p.conv, p.bn) for p in report.folded] == [("body.0", "body.1")]
    assert [n.path for n in report.not_folded] == ["extra"]
    x = torch.rand(2, 2, 6, 6)
    with torch.no_grad():
        assert float((report.module(x) - module.eval()(x)).abs().max()) < 1e-5


def test_fold_batchnorm_returns_the_module() -> None:
    model = build("cllwcsinet", 16)
    _randomise_batchnorm(model, seed=11)
    folded = fold_batchnorm(model)
    assert _batchnorms(folded) == []
    x = torch.rand(3, 2, 32, 32)
    with torch.no_grad():
        assert float((folded(x) - model(x)).abs().max()) < 1e-5
