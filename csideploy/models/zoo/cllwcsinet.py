"""CLLWCsiNet (Ansari et al., "CLLWCsiNet: convolutional latent-space lightweight CSI
feedback"): an FC-free autoencoder whose codeword is a (C, 1, 32) feature map.

Encoder (UE):
  three factorized paths on the (2, 32, 32) CSI, each ConvBN -> LReLU -> ConvBN, 2 -> 2
  channels: `encoder_p1` 1x7 then 7x1, `encoder_p2` 1x5 then 5x1, `encoder_p3` 1x3 then 3x1;
  concat (6) -> `con1x1` ConvBN 1x7 (6 -> 2) -> LReLU -> view (2, 32, 32) as (64, 1, 32) ->
  `encoder_compression`: path A `conv` = ConvBN 1x7 64->32, LReLU, ConvBN 1x7 32->16, LReLU
  and, when C < 16, ConvBN 1x7 16->C; path B `conv_2` = ConvBN 1x7 64->C; concat (2C) ->
  LReLU -> `conv_3` ConvBN 1x7 (2C -> C) -> LReLU. The codeword is the (C, 1, 32) map,
  returned flat as (N, 32*C) with C = 64 / CR: 16, 8, 4, 2, 1 for CR 1/4 ... 1/64.

Decoder (BS):
  `channel` AWGN on the codeword (training mode only, at `train_snr_db`; in eval mode only
  when `noise_snr_db` is set; see `csideploy.models.noise`) -> the RECEIVED codeword feeds both
  `decoder_get_feedback_in_UE` (expansion) and `remove_AGN` (denoising), each ConvBN 1x7
  C -> 2C -> 4C -> 64 capped at 64 (C -> 32 -> 64 at CR 1/4, 8 -> 16 -> 32 -> 64 at 1/8,
  4 -> 8 -> 16 -> 64 at 1/16) with LReLU between the convolutions and none after the last;
  expansion minus denoising -> LReLU -> view (2, 32, 32) -> two `decoder_refine_net`
  RefineNets (a 1x7 path `conv` and a 1x5 path `conv_1`, each ConvBN 2->8, LReLU, 8->16,
  LReLU, 16->2; concat (4) -> LReLU -> `conv1x1` ConvBN 1x7 4->2; plus the identity; LReLU)
  -> `_last_cov` ConvBN 1x7 (2 -> 2) -> sigmoid.

As in the public code (whose module names are kept so that its `model_state_dict` checkpoints
split onto `encoder` / `decoder` by key prefix), every convolution has a bias and BatchNorm
uses eps 1e-3; the public code's BatchNorm momentum 0.99 (a Keras value, which PyTorch reads
as "keep 1 % of the running statistics") is not kept: momentum is PyTorch's 0.1. Per-CR
channel plans follow Table II of the paper (CR 1/4: 64, 32, 16; 1/8: 64, 32, 16, 8; 1/16:
64, 32, 16, 4); CR 1/32 and 1/64 extend the same rule.

Learnable parameters (weights, conv biases, BN affine; running statistics excluded):

  CR      total    encoder   decoder   paper    encoder MACs   total MACs
  1/4    70,268     29,158    41,110   70.26K   1.126M         6.742M
  1/8    66,756     23,758    42,998   66.7K    0.954M         6.627M
  1/16   42,608     20,810    21,798   42.6K    0.861M         5.860M
  1/32   32,382     19,504    12,878   -        0.820M         5.536M
  1/64   27,731     18,893     8,838   -        0.801M         5.389M

The paper's three counts are these, truncated; they count conv biases (PyTorch's default) and
BN weight and bias but not BN running statistics. Its FLOPs (7.26M / 7.15M / 6.63M) are
7-13 % above the conv MACs counted here, the usual gap when a profiler also counts BN, bias
and activation operations. The public code's noise bugs are not kept:
it adds noise in eval mode too and feeds the clean codeword to the expansion branch; here
both branches decode the received codeword and noise is added only when asked.
"""

from __future__ import annotations

import torch
from torch import nn

from csideploy.models.blocks import leaky
from csideploy.models.noise import AwgnChannel
from csideploy.models.registry import (
    CSI_SHAPE,
    CsiAutoencoder,
    PublishedFigures,
    register_model,
)

LATENT_WIDTH = 32
LATENT_CHANNELS_IN = 64
_CHANNELS = {4: 16, 8: 8, 16: 4, 32: 2, 64: 1}
_PARAMS = {4: 70_268, 8: 66_756, 16: 42_608}
_NMSE_INDOOR = {4: -15.09, 8: -11.11, 16: -8.62}


class BiasedConvBN(nn.Sequential):
    """Conv2d with bias and 'same' padding, then BatchNorm2d eps 1e-3 (keys `conv.*`, `bn.*`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int]) -> None:
        padding = ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)
        super().__init__()
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding))
        self.add_module("bn", nn.BatchNorm2d(out_channels, eps=1e-3))


Kernel = tuple[int, int]


def _stack(names: list[str], channels: list[int], kernels: Kernel | list[Kernel]) -> nn.Sequential:
    """ConvBN layers `channels[i] -> channels[i+1]` named `names[i]`, LReLU between them."""
    if not isinstance(kernels, list):
        kernels = [kernels] * len(names)
    seq = nn.Sequential()
    for i, name in enumerate(names):
        if i:
            seq.add_module(f"relu{i}", leaky())
        seq.add_module(name, BiasedConvBN(channels[i], channels[i + 1], kernels[i]))
    return seq


def latent_channels(cr: int) -> int:
    """C, the codeword's channel count: 2048 / (32 * cr)."""
    return _CHANNELS[cr]


def _decoder_plan(c: int) -> list[int]:
    """C, 2C, 4C capped at 64, then 64: the expansion and denoising branch widths."""
    plan = [c]
    while plan[-1] * 2 < LATENT_CHANNELS_IN and len(plan) < 3:
        plan.append(plan[-1] * 2)
    return [*plan, LATENT_CHANNELS_IN]


class EncoderCompression(nn.Module):
    """(N, 64, 1, 32) -> (N, C, 1, 32): two 1x7 paths, concatenated and merged."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Sequential()
        self.conv.add_module("first_conv1x7", BiasedConvBN(64, 32, (1, 7)))
        self.conv.add_module("relu1", leaky())
        self.conv.add_module("second_Conv1x7", BiasedConvBN(32, 16, (1, 7)))
        self.conv.add_module("relu2", leaky())
        if c < 16:
            self.conv.add_module("third_Conv1x7", BiasedConvBN(16, c, (1, 7)))
        self.conv_2 = BiasedConvBN(64, c, (1, 7))
        self.conv_3 = BiasedConvBN(2 * c, c, (1, 7))
        self.relu = leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = self.relu(torch.cat((self.conv(x), self.conv_2(x)), dim=1))
        return self.relu(self.conv_3(merged))


class CllwEncoder(nn.Module):
    """Multi-resolution features, reshaped to (64, 1, 32) and compressed to (N, 32*C)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        # Key names are the public checkpoint's (its 1x5 path is also named conv1x3/conv3x1).
        self.encoder_p1 = _stack(["first_conv1x7", "second_conv1x7"], [2, 2, 2], [(1, 7), (7, 1)])
        self.encoder_p2 = _stack(["conv1x3", "conv3x1"], [2, 2, 2], [(1, 5), (5, 1)])
        self.encoder_p3 = _stack(["conv1x3", "conv3x1"], [2, 2, 2], [(1, 3), (3, 1)])
        self.con1x1 = BiasedConvBN(6, 2, (1, 7))
        self.relu = leaky()
        self.encoder_compression = EncoderCompression(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = torch.cat((self.encoder_p1(x), self.encoder_p2(x), self.encoder_p3(x)), dim=1)
        features = self.relu(self.con1x1(paths))
        latent = features.reshape(x.shape[0], LATENT_CHANNELS_IN, 1, LATENT_WIDTH)
        return self.encoder_compression(latent).flatten(1)


class MultiPathRefineNet(nn.Module):
    """Residual block: 1x7 and 1x5 paths (2 -> 8 -> 16 -> 2), merged by a 1x7 ConvBN."""

    def __init__(self) -> None:
        super().__init__()
        names = ["first_conv1x7", "second_Conv1x7", "third_Conv1x7"]
        self.conv = _stack(names, [2, 8, 16, 2], (1, 7))
        self.conv_1 = _stack(names, [2, 8, 16, 2], (1, 5))
        self.conv1x1 = BiasedConvBN(4, 2, (1, 7))
        self.relu = leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = self.relu(torch.cat((self.conv(x), self.conv_1(x)), dim=1))
        return self.relu(self.conv1x1(merged) + x)


class CllwDecoder(nn.Module):
    """AWGN channel, expansion minus denoising, two RefineNets, 1x7 ConvBN and sigmoid."""

    def __init__(self, c: int, train_snr_db: float | None = None) -> None:
        super().__init__()
        self.channels = c
        self.channel = AwgnChannel(train_snr_db=train_snr_db)
        plan = _decoder_plan(c)
        expansion_names = ["first_conv1x7", "conv1x7", "second_conv1x7"][: len(plan) - 1]
        denoise_names = ["conv_1x7", "conv_7x1", "conv_3x3"][: len(plan) - 1]
        self.decoder_get_feedback_in_UE = _stack(expansion_names, plan, (1, 7))
        self.remove_AGN = _stack(denoise_names, plan, (1, 7))
        self.relu = leaky()
        self.decoder_refine_net = nn.ModuleList([MultiPathRefineNet(), MultiPathRefineNet()])
        self._last_cov = nn.Sequential()
        self._last_cov.add_module("firstcov2", BiasedConvBN(2, 2, (1, 7)))
        self._last_cov.add_module("activation", nn.Sigmoid())

    @property
    def noise_snr_db(self) -> float | None:
        """SNR of noise added in ANY mode (evaluation under a noisy channel); None: off."""
        return self.channel.snr_db

    @noise_snr_db.setter
    def noise_snr_db(self, value: float | None) -> None:
        self.channel.snr_db = None if value is None else float(value)

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        received = self.channel(codeword).reshape(codeword.shape[0], self.channels, 1, LATENT_WIDTH)
        x = self.decoder_get_feedback_in_UE(received) - self.remove_AGN(received)
        x = self.relu(x).reshape(codeword.shape[0], *CSI_SHAPE)
        for block in self.decoder_refine_net:
            x = block(x)
        return self._last_cov(x)


@register_model(
    "cllwcsinet",
    latent="conv",
    summary="CLLWCsiNet: FC-free conv latent codeword (C x 1 x 32), denoising decoder",
    codeword_key="encoder.encoder_compression.conv_3.conv.weight",
    flat_prefixes={
        "encoder_p1.": "encoder",
        "encoder_p2.": "encoder",
        "encoder_p3.": "encoder",
        "con1x1.": "encoder",
        "encoder_compression.": "encoder",
        "decoder_get_feedback_in_UE.": "decoder",
        "remove_AGN.": "decoder",
        "decoder_refine_net.": "decoder",
        "_last_cov.": "decoder",
    },
    published={
        cr: PublishedFigures(
            params_total=_PARAMS.get(cr),
            nmse_indoor_db=_NMSE_INDOOR.get(cr),
        )
        for cr in _CHANNELS
    },
)
def cllwcsinet(cr: int, *, train_snr_db: float | None = None) -> CsiAutoencoder:
    """CLLWCsiNet at CR 1/cr; `train_snr_db` adds codeword AWGN in training mode (paper: 40)."""
    c = latent_channels(cr)
    model = CsiAutoencoder(
        CllwEncoder(c),
        CllwDecoder(c, train_snr_db),
        name="cllwcsinet",
        cr=cr,
        codeword_length=c * LATENT_WIDTH,
    )
    model.build_options = {"train_snr_db": train_snr_db}
    return model
