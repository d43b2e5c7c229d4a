"""CsiNet (Wen et al., "Deep learning for massive MIMO CSI feedback").

Rebuilt in PyTorch as the original Keras model is: its BatchNormalization normalises the last
axis (the 32 delay bins) of channels-first tensors with eps 1e-3, momentum 0.99; that quirk
is kept (`DelayBatchNorm`) so the parameter counts match the published ones.
"""

from __future__ import annotations

import torch
from torch import nn

from csideploy.models.blocks import DelayBatchNorm, Unflatten, leaky
from csideploy.models.registry import (
    CSI_SHAPE,
    CSI_SIZE,
    CsiAutoencoder,
    PublishedFigures,
    register_model,
)

_ENCODER_PARAMS = {4: 1_049_190, 16: 262_374, 32: 131_238, 64: 65_670}
_NMSE = {
    4: (-17.36, -8.75),
    8: (-12.70, -7.61),
    16: (-8.65, -4.51),
    32: (-6.24, -2.81),
    64: (-5.84, -1.93),
}


class ConvDelayBN(nn.Sequential):
    """3x3 'same' Conv2d with bias, then the delay-axis BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.add_module("bn", DelayBatchNorm())


class RefineNet(nn.Module):
    """Residual block 2 -> 8 -> 16 -> 2 channels, identity added, then LeakyReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            ConvDelayBN(2, 8), leaky(), ConvDelayBN(8, 16), leaky(), ConvDelayBN(16, 2)
        )
        self.relu = leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + x)


class CsiNetEncoder(nn.Module):
    """3x3 conv + BN + LeakyReLU, flatten, Dense to the codeword (N, M)."""

    def __init__(self, codeword_length: int) -> None:
        super().__init__()
        self.conv_bn = ConvDelayBN(2, 2)
        self.relu = leaky()
        self.fc = nn.Linear(CSI_SIZE, codeword_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.relu(self.conv_bn(x)).flatten(1))


class CsiNetDecoder(nn.Module):
    """Dense expansion, two RefineNets, 3x3 conv and sigmoid."""

    def __init__(self, codeword_length: int) -> None:
        super().__init__()
        self.fc = nn.Linear(codeword_length, CSI_SIZE)
        self.unflatten = Unflatten(CSI_SHAPE)
        self.refine1 = RefineNet()
        self.refine2 = RefineNet()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        x = self.refine2(self.refine1(self.unflatten(self.fc(codeword))))
        return self.sigmoid(self.conv(x))


@register_model(
    "csinet",
    summary="CsiNet: conv + FC encoder, RefineNet decoder (Keras layout, delay-axis BN)",
    codeword_key="encoder.fc.weight",
    published={
        cr: PublishedFigures(
            params_encoder=_ENCODER_PARAMS.get(cr),
            nmse_indoor_db=_NMSE[cr][0],
            nmse_outdoor_db=_NMSE[cr][1],
        )
        for cr in _NMSE
    },
)
def csinet(cr: int) -> CsiAutoencoder:
    """CsiNet at compression ratio 1/cr."""
    m = CSI_SIZE // cr
    return CsiAutoencoder(
        CsiNetEncoder(m), CsiNetDecoder(m), name="csinet", cr=cr, codeword_length=m
    )
