"""Kernel-1 1-D convolutions become Linear layers: same function, Gemm/MatMul in ONNX."""

from __future__ import annotations

import torch
from torch import nn

from csideploy.models import build
from csideploy.transforms.linearize import PointwiseLinear, linearize_pointwise_convs


def _onnx_ops(module: nn.Module, x: torch.Tensor) -> list[str]:
    program = torch.onnx.export(module.eval(), (x,), dynamo=True, external_data=False)
    return [node.op_type for node in program.model_proto.graph.node]


def test_clnet_fc_in_disguise_becomes_linear_with_the_same_output() -> None:
    torch.manual_seed(0)
    model = build("clnet", 16)
    encoder = linearize_pointwise_convs(model.encoder)
    decoder = linearize_pointwise_convs(model.decoder)
    assert encoder.replaced == ("replace_efc",)
    assert decoder.replaced == ("replace_dfc",)
    assert isinstance(encoder.module.replace_efc, PointwiseLinear)
    assert encoder.module.replace_efc.weight.shape == (128, 2048)
    assert torch.equal(encoder.module.replace_efc.weight, model.encoder.replace_efc.weight[..., 0])
    assert torch.equal(
        decoder.module.replace_dfc.weight, model.decoder.replace_dfc.weight[..., 0].t()
    )
    x = torch.rand(4, 2, 32, 32)
    with torch.no_grad():
        codeword = model.encoder(x)
        assert float((encoder.module(x) - codeword).abs().max()) < 1e-5
        assert float((decoder.module(codeword) - model.decoder(codeword)).abs().max()) < 1e-5
    assert isinstance(model.encoder.replace_efc, nn.Conv1d)


def test_exported_encoder_holds_a_gemm_instead_of_the_big_conv() -> None:
    model = build("clnet", 64)
    x = torch.rand(1, 2, 32, 32)
    before = _onnx_ops(model.encoder, x)
    after = _onnx_ops(linearize_pointwise_convs(model.encoder).module, x)
    def fc_count(ops: list[str]) -> int:
        return ops.count("Gemm") + ops.count("MatMul")

    assert fc_count(after) == fc_count(before) + 1  # the SE layers are Gemms already
    assert after.count("Conv") == before.count("Conv") - 1


def test_pointwise_linear_over_a_length_axis() -> None:
    conv = nn.Conv1d(6, 4, 1)
    linear = linearize_pointwise_convs(nn.Sequential(conv, nn.Conv1d(4, 4, 3))).module
    assert isinstance(linear[0], PointwiseLinear) and isinstance(linear[1], nn.Conv1d)
    x = torch.randn(2, 6, 9)
    with torch.no_grad():
        assert torch.allclose(linear[0](x), conv(x), atol=1e-6)
