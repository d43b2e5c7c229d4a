"""FC-free ("-cl") variants of CsiNet, CRNet and CLNet: a convolutional latent space.

Following Section III-A and Table III of the CLLWCsiNet paper, the fully connected
compression of each model is replaced by a convolution on the (2, 32, 32) feature map viewed
as (64, 1, 32), and the decoder's fully connected expansion by the mirror convolution:

  encoder: ... features (N, 2, 32, 32) -> view (N, 64, 1, 32) -> `encoder_latent` =
           ConvBN 1x7 (64 -> C, no bias) -> flat codeword (N, 32*C), no activation
  decoder: codeword (N, 32*C) -> view (N, C, 1, 32) -> `decoder_latent` =
           ConvBN 1x7 (C -> 64, no bias) -> view (N, 2, 32, 32) -> the model's own decoder

with C = 2048 / (32 * CR) = 16, 8, 4, 2, 1 for CR 1/4 ... 1/64, so the codeword length stays
2048 / CR. The latent pair costs 898*C + 128 parameters (64*C*7 weights and 2*C BN on the
encoder side, C*64*7 weights and 128 BN on the decoder side). Everything else is the parent
model, except that:

- `csinet-cl` uses BatchNorm over channels (conv with bias + BatchNorm2d, eps 1e-3), as the
  PyTorch CsiNet of the CL paper does; the zoo's delay-axis BatchNorm only exists to load the
  original Keras weights, which a -cl model cannot use anyway;
- `clnet-cl` computes its squeeze-excitation with 1x1 convolutions instead of Linear layers
  (same weights, reshaped), so that its encoder holds no Linear layer at all.

Learnable parameters (running statistics excluded):

  model       CR 1/4   1/8     1/16    1/32    1/64    paper (1/4, 1/8, 1/16)
  csinet-cl   17,900   10,716  7,124   5,328   4,430   17.9K, 10.71K, 7.12K
  crnet-cl    17,622   10,438  6,846   5,050   4,152   17.62K, 10.43K, 6.84K
  clnet-cl    16,742   9,558   5,966   4,170   3,272   -

The paper's counts for CsiNet-CL and CRNet-CL are exactly these, truncated, which pins the
construction down: one 1x7 ConvBN on each side, without conv bias.

Conv multiply-accumulates (batch 1, `csideploy.models.stats`), encoder / whole model:

  model       CR 1/4           1/8              1/16             1/32             1/64
  csinet-cl   0.266M / 3.78M   0.152M / 3.55M   0.094M / 3.43M   0.066M / 3.38M   0.051M / 3.35M
  crnet-cl    0.385M / 3.48M   0.270M / 3.25M   0.213M / 3.14M   0.184M / 3.08M   0.170M / 3.05M
  clnet-cl    0.494M / 2.39M   0.379M / 2.16M   0.322M / 2.04M   0.293M / 1.99M   0.279M / 1.96M

(the paper's FLOPs for CsiNet-CL / CRNet-CL, 4.00M / 3.72M at CR 1/4, sit about 6 % above the
conv MACs, as a profiler that also counts BN and activations gives).
"""

from __future__ import annotations

import torch
from torch import nn

from csideploy.models.blocks import ConvBN, CRBlock, EncoderHead, HardSigmoid, leaky
from csideploy.models.registry import (
    CSI_SHAPE,
    CsiAutoencoder,
    PublishedFigures,
    register_model,
)
from csideploy.models.zoo.cllwcsinet import BiasedConvBN
from csideploy.models.zoo.clnet import SpatialGate

LATENT_VIEW = (64, 1, 32)
CL_CRS = (4, 8, 16, 32, 64)
_CSINET_CL = {4: (17_900, -9.72), 8: (10_716, -3.56), 16: (7_124, -2.19)}
_CRNET_CL = {4: (17_622, -7.35), 8: (10_438, -4.34), 16: (6_846, -2.49)}


def latent_channels(cr: int) -> int:
    """C such that C x 1 x 32 holds 2048 / cr values."""
    return 2048 // (LATENT_VIEW[2] * cr)


class ConvLatentCompressor(nn.Module):
    """(N, 2, 32, 32) -> view (N, 64, 1, 32) -> ConvBN 1x7 (64 -> C) -> flat (N, 32*C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.latent = ConvBN(LATENT_VIEW[0], channels, (1, 7))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.latent(x.reshape(x.shape[0], *LATENT_VIEW)).flatten(1)


class ConvLatentExpander(nn.Module):
    """(N, 32*C) -> view (N, C, 1, 32) -> ConvBN 1x7 (C -> 64) -> view (N, 2, 32, 32)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.latent = ConvBN(channels, LATENT_VIEW[0], (1, 7))

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        n = codeword.shape[0]
        return self.latent(codeword.reshape(n, self.channels, 1, LATENT_VIEW[2])).reshape(
            n, *CSI_SHAPE
        )


def _autoencoder(
    encoder: nn.Module, decoder: nn.Module, name: str, cr: int, channels: int
) -> CsiAutoencoder:
    return CsiAutoencoder(
        encoder, decoder, name=name, cr=cr, codeword_length=channels * LATENT_VIEW[2]
    )


# --- CsiNet-CL ------------------------------------------------------------------------------


class ChannelRefineNet(nn.Module):
    """CsiNet's residual block 2 -> 8 -> 16 -> 2 (3x3), BatchNorm over channels."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            BiasedConvBN(2, 8, (3, 3)),
            leaky(),
            BiasedConvBN(8, 16, (3, 3)),
            leaky(),
            BiasedConvBN(16, 2, (3, 3)),
        )
        self.relu = leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + x)


class CsiNetCLEncoder(nn.Module):
    """3x3 ConvBN + LReLU, then the convolutional latent compressor."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_bn = BiasedConvBN(2, 2, (3, 3))
        self.relu = leaky()
        self.encoder_latent = ConvLatentCompressor(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder_latent(self.relu(self.conv_bn(x)))


class CsiNetCLDecoder(nn.Module):
    """Convolutional latent expander, two RefineNets, 3x3 conv and sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.decoder_latent = ConvLatentExpander(channels)
        self.refine1 = ChannelRefineNet()
        self.refine2 = ChannelRefineNet()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        x = self.refine2(self.refine1(self.decoder_latent(codeword)))
        return self.sigmoid(self.conv(x))


@register_model(
    "csinet-cl",
    conv_variant_of="csinet",
    summary="CsiNet with a convolutional latent space (no FC), channel BatchNorm",
    codeword_key="encoder.encoder_latent.latent.conv.weight",
    crs=CL_CRS,
    published={
        cr: PublishedFigures(params_total=p, nmse_indoor_db=n) for cr, (p, n) in _CSINET_CL.items()
    },
)
def csinet_cl(cr: int) -> CsiAutoencoder:
    """CsiNet-CL at CR 1/cr: codeword (C, 1, 32) flattened, C = 64 / cr."""
    c = latent_channels(cr)
    return _autoencoder(CsiNetCLEncoder(c), CsiNetCLDecoder(c), "csinet-cl", cr, c)


# --- CRNet-CL -------------------------------------------------------------------------------


class CRNetCLEncoder(nn.Module):
    """CRNet's two convolutional paths and 1x1 merge, then the convolutional latent."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encoder1 = EncoderHead()
        self.encoder2 = ConvBN(2, 2, 3)
        self.encoder_conv = nn.Sequential()
        self.encoder_conv.add_module("relu1", leaky())
        self.encoder_conv.add_module("conv1x1_bn", ConvBN(4, 2, 1))
        self.encoder_conv.add_module("relu2", leaky())
        self.encoder_latent = ConvLatentCompressor(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat((self.encoder1(x), self.encoder2(x)), dim=1)
        return self.encoder_latent(self.encoder_conv(merged))


class CRFeatureDecoder(nn.Module):
    """Latent expander, 5x5 ConvBN, two CRBlocks and the output activation (CRNet / CLNet)."""

    def __init__(self, channels: int, *, long: int, output: nn.Module) -> None:
        super().__init__()
        self.decoder_latent = ConvLatentExpander(channels)
        self.decoder_feature = nn.Sequential()
        self.decoder_feature.add_module("conv5x5_bn", ConvBN(2, 2, 5))
        self.decoder_feature.add_module("relu", leaky())
        self.decoder_feature.add_module("CRBlock1", CRBlock(long=long))
        self.decoder_feature.add_module("CRBlock2", CRBlock(long=long))
        self.output = output

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        return self.output(self.decoder_feature(self.decoder_latent(codeword)))


@register_model(
    "crnet-cl",
    conv_variant_of="crnet",
    summary="CRNet with a convolutional latent space (no FC)",
    codeword_key="encoder.encoder_latent.latent.conv.weight",
    crs=CL_CRS,
    published={
        cr: PublishedFigures(params_total=p, nmse_indoor_db=n) for cr, (p, n) in _CRNET_CL.items()
    },
)
def crnet_cl(cr: int) -> CsiAutoencoder:
    """CRNet-CL at CR 1/cr: codeword (C, 1, 32) flattened, C = 64 / cr."""
    c = latent_channels(cr)
    decoder = CRFeatureDecoder(c, long=9, output=nn.Sigmoid())
    return _autoencoder(CRNetCLEncoder(c), decoder, "crnet-cl", cr, c)


# --- CLNet-CL -------------------------------------------------------------------------------


class ConvSqueezeExcitation(nn.Module):
    """Channel attention x * sigmoid(W2 relu(W1 avgpool(x))) with 1x1 convs, no biases."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3), keepdim=True))


class CLNetCLEncoder(nn.Module):
    """CLNet's attention-weighted features, then the convolutional latent."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encoder1 = EncoderHead()
        self.sa = SpatialGate()
        self.encoder2 = ConvBN(2, 32, 1)
        self.se = ConvSqueezeExcitation(32)
        self.encoder_conv = nn.Sequential()
        self.encoder_conv.add_module("relu1", leaky())
        self.encoder_conv.add_module("conv1x1_bn", ConvBN(34, 2, 1))
        self.encoder_conv.add_module("relu2", leaky())
        self.encoder_latent = ConvLatentCompressor(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat((self.sa(self.encoder1(x)), self.se(self.encoder2(x))), dim=1)
        return self.encoder_latent(self.encoder_conv(merged))


@register_model(
    "clnet-cl",
    conv_variant_of="clnet",
    summary="CLNet with a convolutional latent space (no FC), 1x1-conv squeeze-excitation",
    codeword_key="encoder.encoder_latent.latent.conv.weight",
    crs=CL_CRS,
)
def clnet_cl(cr: int) -> CsiAutoencoder:
    """CLNet-CL at CR 1/cr: codeword (C, 1, 32) flattened, C = 64 / cr."""
    c = latent_channels(cr)
    decoder = CRFeatureDecoder(c, long=3, output=HardSigmoid())
    return _autoencoder(CLNetCLEncoder(c), decoder, "clnet-cl", cr, c)
