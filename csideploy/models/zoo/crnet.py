"""CRNet (Lu et al., "Multi-resolution CSI feedback with deep learning in massive MIMO").

The official model is one flat module; here the same layers are grouped under `encoder` and
`decoder`, and a flat official checkpoint is split by key prefix (see `flat_prefixes`).
"""

from __future__ import annotations

import torch
from torch import nn

from csideploy.models.blocks import ConvBN, CRBlock, EncoderHead, Unflatten, leaky
from csideploy.models.registry import (
    CSI_SHAPE,
    CSI_SIZE,
    CsiAutoencoder,
    PublishedFigures,
    register_model,
)

_PARAMS = {
    4: (2_102_838, 1_049_260),
    8: (1_054_006, 524_716),
    16: (529_590, 262_444),
    32: (267_382, 131_308),
    64: (136_278, 65_740),
}
_MACS_ENCODER_M = {4: 1.204, 8: 0.680, 16: 0.418, 32: 0.287, 64: 0.221}
_MACS_TOTAL_M = {4: 5.12, 8: 4.07, 16: 3.55, 32: 3.28, 64: 3.16}
_NMSE = {
    4: (-26.99, -12.70),
    8: (-16.01, -8.04),
    16: (-11.35, -5.44),
    32: (-8.93, -3.51),
    64: (-6.49, -2.22),
}


class CRNetEncoder(nn.Module):
    """Two convolutional paths, a 1x1 merge, then one Linear layer: the codeword (N, M)."""

    def __init__(self, codeword_length: int) -> None:
        super().__init__()
        self.encoder1 = EncoderHead()
        self.encoder2 = ConvBN(2, 2, 3)
        self.encoder_conv = nn.Sequential()
        self.encoder_conv.add_module("relu1", leaky())
        self.encoder_conv.add_module("conv1x1_bn", ConvBN(4, 2, 1))
        self.encoder_conv.add_module("relu2", leaky())
        self.encoder_fc = nn.Linear(CSI_SIZE, codeword_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat((self.encoder1(x), self.encoder2(x)), dim=1)
        return self.encoder_fc(self.encoder_conv(merged).flatten(1))


class CRNetDecoder(nn.Module):
    """Linear expansion, a 5x5 ConvBN, two CRBlocks (1x9/9x1) and a sigmoid."""

    def __init__(self, codeword_length: int) -> None:
        super().__init__()
        self.decoder_fc = nn.Linear(codeword_length, CSI_SIZE)
        self.unflatten = Unflatten(CSI_SHAPE)
        self.decoder_feature = nn.Sequential()
        self.decoder_feature.add_module("conv5x5_bn", ConvBN(2, 2, 5))
        self.decoder_feature.add_module("relu", leaky())
        self.decoder_feature.add_module("CRBlock1", CRBlock(long=9))
        self.decoder_feature.add_module("CRBlock2", CRBlock(long=9))
        self.sigmoid = nn.Sigmoid()

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.decoder_feature(self.unflatten(self.decoder_fc(codeword))))


@register_model(
    "crnet",
    summary="CRNet: multi-resolution conv encoder + FC codeword, CRBlock decoder",
    codeword_key="encoder.encoder_fc.weight",
    flat_prefixes={
        "encoder1.": "encoder",
        "encoder2.": "encoder",
        "encoder_conv.": "encoder",
        "encoder_fc.": "encoder",
        "decoder_fc.": "decoder",
        "decoder_feature.": "decoder",
    },
    published={
        cr: PublishedFigures(
            params_total=_PARAMS[cr][0],
            params_encoder=_PARAMS[cr][1],
            macs_encoder_m=_MACS_ENCODER_M[cr],
            macs_total_m=_MACS_TOTAL_M[cr],
            nmse_indoor_db=_NMSE[cr][0],
            nmse_outdoor_db=_NMSE[cr][1],
        )
        for cr in _PARAMS
    },
)
def crnet(cr: int) -> CsiAutoencoder:
    """CRNet at compression ratio 1/cr."""
    m = CSI_SIZE // cr
    return CsiAutoencoder(CRNetEncoder(m), CRNetDecoder(m), name="crnet", cr=cr, codeword_length=m)
