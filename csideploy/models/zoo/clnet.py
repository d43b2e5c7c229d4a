"""CLNet (Ji & Li, "CLNet: complex input lightweight neural network designed for massive MIMO
CSI feedback").

Encoder: CRNet's `encoder1` followed by a CBAM spatial gate, a 1x1 "forged complex-valued
input" layer followed by squeeze-excitation, a 1x1 merge, and a kernel-1 Conv1d that is a fully
connected layer in disguise (`replace_efc`). The decoder ends in a hard-sigmoid.
"""

from __future__ import annotations

import torch
from torch import nn

from csideploy.models.blocks import ConvBN, CRBlock, EncoderHead, HardSigmoid, Unflatten, leaky
from csideploy.models.registry import (
    CSI_SHAPE,
    CSI_SIZE,
    CsiAutoencoder,
    PublishedFigures,
    register_model,
)

_PARAMS = {
    4: (2_101_958, 1_049_556),
    8: (1_053_126, 525_012),
    16: (528_710, 262_740),
    32: (266_502, 131_604),
    64: (135_398, 66_036),
}
_MACS_ENCODER_M = {4: 1.313, 8: 0.789, 16: 0.526, 32: 0.395, 64: 0.330}
_NMSE = {
    4: (-29.16, -12.88),
    8: (-15.60, -8.29),
    16: (-11.15, -5.56),
    32: (-8.95, -3.49),
    64: (-6.34, -2.19),
}


class ChannelPool(nn.Module):
    """Channel-wise max and mean, stacked as two maps (CBAM's descriptor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)


class SpatialGate(nn.Module):
    """CBAM spatial attention: x * sigmoid(ConvBN3x3([max; mean]))."""

    def __init__(self) -> None:
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = ConvBN(2, 1, 3, bn_momentum=0.01)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.spatial(self.compress(x)))


class SqueezeExcitation(nn.Module):
    """Channel attention: x * sigmoid(W2 relu(W1 avgpool(x))), no biases."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class CLNetEncoder(nn.Module):
    """Attention-weighted conv features, flattened and compressed to the codeword (N, M)."""

    def __init__(self, codeword_length: int) -> None:
        super().__init__()
        self.encoder1 = EncoderHead()
        self.sa = SpatialGate()
        self.encoder2 = ConvBN(2, 32, 1)
        self.se = SqueezeExcitation(32)
        self.encoder_conv = nn.Sequential()
        self.encoder_conv.add_module("relu1", leaky())
        self.encoder_conv.add_module("conv1x1_bn", ConvBN(34, 2, 1))
        self.encoder_conv.add_module("relu2", leaky())
        self.replace_efc = nn.Conv1d(CSI_SIZE, codeword_length, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat((self.sa(self.encoder1(x)), self.se(self.encoder2(x))), dim=1)
        features = self.encoder_conv(merged).reshape(x.shape[0], CSI_SIZE, 1)
        return self.replace_efc(features).flatten(1)


class CLNetDecoder(nn.Module):
    """Kernel-1 ConvTranspose1d expansion, 5x5 ConvBN, two CRBlocks (1x3/3x1), hard-sigmoid."""

    def __init__(self, codeword_length: int) -> None:
        super().__init__()
        self.replace_dfc = nn.ConvTranspose1d(codeword_length, CSI_SIZE, kernel_size=1)
        self.unflatten = Unflatten(CSI_SHAPE)
        self.decoder_feature = nn.Sequential()
        self.decoder_feature.add_module("conv5x5_bn", ConvBN(2, 2, 5))
        self.decoder_feature.add_module("relu", leaky())
        self.decoder_feature.add_module("CRBlock1", CRBlock(long=3))
        self.decoder_feature.add_module("CRBlock2", CRBlock(long=3))
        self.hsig = HardSigmoid()

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        expanded = self.replace_dfc(codeword.reshape(codeword.shape[0], -1, 1))
        return self.hsig(self.decoder_feature(self.unflatten(expanded)))


@register_model(
    "clnet",
    summary="CLNet: complex-input layer, spatial + channel attention, hard-sigmoid decoder",
    codeword_key="encoder.replace_efc.weight",
    published={
        cr: PublishedFigures(
            params_total=_PARAMS[cr][0],
            params_encoder=_PARAMS[cr][1],
            macs_encoder_m=_MACS_ENCODER_M[cr],
            nmse_indoor_db=_NMSE[cr][0],
            nmse_outdoor_db=_NMSE[cr][1],
        )
        for cr in _PARAMS
    },
)
def clnet(cr: int) -> CsiAutoencoder:
    """CLNet at compression ratio 1/cr."""
    m = CSI_SIZE // cr
    return CsiAutoencoder(CLNetEncoder(m), CLNetDecoder(m), name="clnet", cr=cr, codeword_length=m)
