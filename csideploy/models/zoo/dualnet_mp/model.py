"""DualNet-MP (Lin, Liu, Lee, Ding, "Deep learning phase compression for MIMO CSI feedback by
exploiting FDD channel reciprocity").

The DL CSI H (32 x 32 complex, angular-delay) is split into magnitude |H|, cosine matrix
Cos = cos(angle H) and sign matrix A = sign(sin(angle H)) (eq. 7); (Cos, A) determine the
phase. Everything below that computes these or compresses them runs on the UE; the rest runs
at the BS.

UE (`encoder`, and the three-output `ue_encoder(model)`):
  magnitude branch: m = g sqrt(2) |H| (g: the magnitude gain, below) -> four 7x7 circular
  convolutions (1 -> 16 -> 8 -> 4 -> 1 channels, LeakyReLU 0.3 after each) -> FC (1024 ->
  1024 / CR_MAG) -> tanh -> SSQ (K_MAG bits); phase branch: Cos -> the same convolutions with
  tanh -> FC (1024 -> 1024 / CR_PHA) -> tanh -> SSQ (K_PHA bits); sign bits: A at Rs * 1024
  fixed positions (1 = sin >= 0).
BS (`decoder(codeword, ul)`):
  magnitude decoder: FC (-> 1024) -> (1, 32, 32) joined with the UL magnitude g sqrt(2) |H_UL|
  (side information, computed from the UL CSI) -> four 7x7 circular convolutions (2 -> 16 ->
  8 -> 4 -> 1, LeakyReLU after each) -> m_hat; phase decoder: FC (-> 1024) -> (1, 32, 32) joined
  with the sign map (the fed-back signs at their positions, 0 elsewhere) -> four 7x7 circular
  convolutions (2 -> 16 -> 8 -> 4 -> 1, tanh after each) -> Cos_hat in [-1, 1];
  preliminary estimate [m_hat Cos_hat, m_hat Sin_hat] with Sin_hat = A (1 - Cos_hat^2)^(1/2)
  (eq. 14b); combining network: two residual blocks of two 5x5 circular convolutions
  (2 -> 16 -> 2, LeakyReLU between); output = estimate / (g sqrt(2)) + 0.5 in the project
  layout.

Magnitude gain. Angular-delay CSI is sparse: on the built-in indoor data about 1% of the
entries hold 90% of the energy and sqrt(2) |H| has mean 0.003 and RMS 0.013. Fed to the networks
as is, such inputs barely move the encoder and the decoder learns to output zero (a sigmoid
output layer saturates there and stage 1 never recovers). Both ends therefore scale the
magnitudes by one constant g = 1 / RMS(sqrt(2) |H|) of the training DL CSI (`fit_magnitude_gain`,
run by `train_dualnet_mp`; 1 until fitted), so every magnitude the networks see or produce has
unit RMS, and the magnitude decoder ends in LeakyReLU, which neither saturates nor dies (a
sigmoid and a ReLU both can). g is a buffer on both ends, saved with the weights and folded into
the exported graphs as a constant multiply.

Circular convolutions wrap both axes (angle and delay) by explicit slice-and-concatenate
padding followed by an unpadded Conv2d, which exports to ONNX and TFLite as Slice / Concat /
Conv.

Codeword contract. `encoder(x)` returns ONE flat float tensor (N, M_MAG + M_PHA + K_S):
magnitude levels, phase levels (SSQ integer levels in [-2**(K-1), 2**(K-1) - 1]; soft while
training) and the sign bits (0. / 1.). `ue_encoder(model)` returns the same three parts as
integer tensors: (magnitude int8 (N, M_MAG), phase int8 (N, M_PHA), sign uint8 (N, K_S)).
`decoder(codeword, ul_csi=None)`: the UL CSI (N, 2, 32, 32), same layout as the input, is the
side information; without it the decoder runs on an all-zero UL magnitude (the figures of
`csideploy models` are counted this way; a trained model must be given the UL CSI).

Sign positions. The paper feeds back the sign only "for a swath of entries with dominant
magnitudes" with ratio Rs; both ends must agree on which entries, so the positions are a fixed
buffer: by default the Rs * 1024 entries of smallest delay (delay-major order), and
`fit_sign_positions(model, dl)` picks the entries of largest mean DL magnitude of a training
set (`train_dualnet_mp` does this first). Rs = 1 sends the whole sign matrix.

Feedback bits (eq. 15, read with footnote 4 and Sec. IV-C, which give 1 bit per phase entry for
CR_PHA = 1/8 with 8-bit codewords and 0.625 bits per entry for CR_PHA = 1/16 with Rs = 0.125):
B_PHA = K_PHA * CR_PHA * Qt Nb + Rs * Qt Nb; the magnitude codeword adds K_MAG * CR_MAG * Qt Nb.

Defaults: CR_MAG = 1/4 (the public code's default), K_MAG = K_PHA = 8, Rs = 0.25 at CR_PHA 1/8
and 0.125 at 1/16 (the seed's range [0.25, 0.125]). The registry CR is CR_PHA (8 or 16).
Parameters at CR_PHA 1/8: 829,064 (the paper: "826K"); the breakdown is in `param_breakdown`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from csideploy.errors import ShapeError
from csideploy.models.blocks import LEAKY_SLOPE, leaky
from csideploy.models.quantizers import SumOfSigmoidQuantizer
from csideploy.models.registry import (
    CsiAutoencoder,
    InputSpec,
    check_input,
)
from csideploy.models.zoo.dualnet_mp.layers import (
    CHANNELS,
    ENTRIES,
    GRID,
    MAGNITUDE_SCALE,
    ZERO_OFFSET,
    CircularConv2d,
    DualNetMPConfig,
    circular_stack,
)


class UeFeatures(NamedTuple):
    """What the UE derives from the DL CSI, each (N, 1, 32, 32)."""

    magnitude: torch.Tensor
    """gain * sqrt(2) |H| (sqrt(2) |H| lies in [0, 1])."""
    cos: torch.Tensor
    """cos(angle H); 1 where H = 0 (angle 0)."""
    sign: torch.Tensor
    """sign(sin(angle H)) as +1 (sin >= 0) or -1."""


def csi_features(csi: torch.Tensor, gain: float | torch.Tensor = 1.0) -> UeFeatures:
    """Magnitude (times `gain`), cosine and sign matrices of project-layout CSI (N, 2, 32, 32)
    in [0, 1]."""
    re = csi[:, 0:1] - ZERO_OFFSET
    im = csi[:, 1:2] - ZERO_OFFSET
    mag = torch.sqrt(re * re + im * im)
    cos = torch.where(mag > 0, re / mag.clamp_min(1e-30), torch.ones_like(re))
    sign = torch.where(im >= 0, torch.ones_like(im), -torch.ones_like(im))
    return UeFeatures(mag * (MAGNITUDE_SCALE * gain), cos, sign)


def ul_magnitude(ul_csi: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The BS's side information: gain * sqrt(2) |H_UL|, (N, 1, 32, 32)."""
    re = ul_csi[:, 0:1] - ZERO_OFFSET
    im = ul_csi[:, 1:2] - ZERO_OFFSET
    return torch.sqrt(re * re + im * im) * (MAGNITUDE_SCALE * gain)


def _gain_buffer() -> torch.Tensor:
    """The magnitude gain g as a 0-d buffer; 1 until `fit_magnitude_gain` sets it."""
    return torch.tensor(1.0)


class BranchEncoder(nn.Module):
    """Four circular convolutions, FC compression, tanh, SSQ: (N, 1, 32, 32) -> (N, M) levels."""

    def __init__(
        self,
        length: int,
        bits: int,
        kernel: int,
        activation: Callable[[], nn.Module],
        steepness: float,
    ) -> None:
        super().__init__()
        self.features = circular_stack((1, *CHANNELS), kernel, activation, activation())
        self.fc = nn.Linear(ENTRIES, length)
        self.quantizer = SumOfSigmoidQuantizer(bits, steepness)

    def squashed(self, x: torch.Tensor) -> torch.Tensor:
        """tanh(FC(features)): the real-valued codeword in [-1, 1] before quantization."""
        return torch.tanh(self.fc(self.features(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self.squashed(x))


def default_sign_positions(count: int) -> torch.Tensor:
    """The `count` entries of smallest delay index (delay-major, then angle), sorted."""
    angle, delay = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    flat = (angle * GRID + delay).ravel()
    order = np.lexsort((angle.ravel(), delay.ravel()))
    return torch.from_numpy(np.sort(flat[order][:count])).long()


class DualNetMPEncoder(nn.Module):
    """UE: CSI (N, 2, 32, 32) -> flat codeword [magnitude levels | phase levels | sign bits]."""

    def __init__(self, config: DualNetMPConfig) -> None:
        super().__init__()
        self.magnitude = BranchEncoder(
            config.magnitude_length,
            config.magnitude_bits,
            config.kernel,
            leaky,
            config.steepness,
        )
        self.phase = BranchEncoder(
            config.phase_length, config.phase_bits, config.kernel, nn.Tanh, config.steepness
        )
        self.register_buffer("sign_positions", default_sign_positions(config.sign_length))
        self.register_buffer("magnitude_gain", _gain_buffer())

    def ue_features(self, csi: torch.Tensor) -> UeFeatures:
        """The branch inputs: magnitude times the magnitude gain, cosine, sign."""
        return csi_features(csi, self.magnitude_gain)

    def parts(self, csi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(magnitude levels, phase levels, sign bits 0/1), all float."""
        features = self.ue_features(csi)
        signs = features.sign.flatten(1).index_select(1, self.sign_positions)
        bits = (signs > 0).to(csi.dtype)
        return self.magnitude(features.magnitude), self.phase(features.cos), bits

    def forward(self, csi: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.parts(csi), dim=1)


class UeThreeOutputEncoder(nn.Module):
    """The handset graph: CSI -> (magnitude int8, phase int8, sign uint8)."""

    def __init__(self, encoder: DualNetMPEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, csi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.encoder.ue_features(csi)
        mag = self.encoder.magnitude
        pha = self.encoder.phase
        signs = features.sign.flatten(1).index_select(1, self.encoder.sign_positions)
        return (
            mag.quantizer.to_integer(mag.squashed(features.magnitude)),
            pha.quantizer.to_integer(pha.squashed(features.cos)),
            (signs > 0).to(torch.uint8),
        )


class DecodedParts(NamedTuple):
    """Intermediate BS estimates, in the units of `csi_features(x, gain)`: magnitudes (and the
    complex estimates) are g sqrt(2) |H|."""

    magnitude: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    sign_map: torch.Tensor
    preliminary: torch.Tensor
    combined: torch.Tensor


class BranchDecoder(nn.Module):
    """FC expansion joined with a side map (UL magnitude or sign map), four circular convs."""

    def __init__(
        self, length: int, kernel: int, activation: Callable[[], nn.Module], last: nn.Module
    ) -> None:
        super().__init__()
        self.fc = nn.Linear(length, ENTRIES)
        self.features = circular_stack((2, *CHANNELS), kernel, activation, last)

    def forward(self, code: torch.Tensor, side: torch.Tensor) -> torch.Tensor:
        expanded = self.fc(code).reshape(code.shape[0], 1, GRID, GRID)
        return self.features(torch.cat((expanded, side), dim=1))


class ResidualBlock(nn.Module):
    """x + CConv(LReLU(CConv(x))), 2 -> width -> 2 channels."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = CircularConv2d(2, width, kernel)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.conv2 = CircularConv2d(width, 2, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act(self.conv1(x)))


class DualNetMPDecoder(nn.Module):
    """BS: flat codeword + UL CSI -> DL CSI estimate (N, 2, 32, 32) in [0, 1]-offset layout."""

    def __init__(self, config: DualNetMPConfig) -> None:
        super().__init__()
        self.lengths = (config.magnitude_length, config.phase_length, config.sign_length)
        # SSQ dequantization is the fixed map level / 2**(K-1).
        self.magnitude_levels = 2 ** (config.magnitude_bits - 1)
        self.phase_levels = 2 ** (config.phase_bits - 1)
        self.magnitude = BranchDecoder(config.magnitude_length, config.kernel, leaky, leaky())
        self.phase = BranchDecoder(config.phase_length, config.kernel, nn.Tanh, nn.Tanh())
        self.combine = nn.Sequential(
            ResidualBlock(config.combine_width, config.combine_kernel),
            ResidualBlock(config.combine_width, config.combine_kernel),
        )
        self.register_buffer("sign_positions", default_sign_positions(config.sign_length))
        self.register_buffer("magnitude_gain", _gain_buffer())

    def sign_map(self, bits: torch.Tensor) -> torch.Tensor:
        """(N, 1, 32, 32): +1 / -1 at the fed-back positions, 0 elsewhere."""
        signs = 2.0 * bits - 1.0
        flat = bits.new_zeros(bits.shape[0], ENTRIES).index_copy(1, self.sign_positions, signs)
        return flat.reshape(bits.shape[0], 1, GRID, GRID)

    def parts(self, codeword: torch.Tensor, ul_csi: torch.Tensor | None = None) -> DecodedParts:
        """Every intermediate estimate (used by training and diagnostics)."""
        if codeword.dim() != 2 or codeword.shape[1] != sum(self.lengths):
            raise ShapeError(
                f"codeword: expected shape (N, {sum(self.lengths)}), got {tuple(codeword.shape)}"
            )
        mag_code, pha_code, bits = torch.split(codeword, list(self.lengths), dim=1)
        n = codeword.shape[0]
        if ul_csi is None:
            side = codeword.new_zeros(n, 1, GRID, GRID)
        else:
            check_input(ul_csi, InputSpec(), "ul_csi")
            side = ul_magnitude(ul_csi, self.magnitude_gain)
        magnitude = self.magnitude(mag_code / self.magnitude_levels, side)
        sign_map = self.sign_map(bits)
        cos = self.phase(pha_code / self.phase_levels, sign_map)
        sin = sign_map * torch.sqrt(torch.clamp(1.0 - cos * cos, min=1e-12))
        preliminary = torch.cat((magnitude * cos, magnitude * sin), dim=1)
        combined = self.combine(preliminary)
        return DecodedParts(magnitude, cos, sin, sign_map, preliminary, combined)

    def forward(self, codeword: torch.Tensor, ul_csi: torch.Tensor | None = None) -> torch.Tensor:
        combined = self.parts(codeword, ul_csi).combined
        return combined / (MAGNITUDE_SCALE * self.magnitude_gain) + ZERO_OFFSET


class DualNetMP(CsiAutoencoder):
    """`model(x, ul) == model.decoder(model.encoder(x), ul)`; `ul` defaults to no side info."""

    def __init__(self, config: DualNetMPConfig) -> None:
        encoder = DualNetMPEncoder(config)
        decoder = DualNetMPDecoder(config)
        super().__init__(
            encoder,
            decoder,
            name="dualnet-mp",
            cr=config.phase_reduction,
            codeword_length=config.codeword_length,
        )
        self.config = config

    def forward(self, x: torch.Tensor, ul_csi: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encoder(x), ul_csi)

    def magnitude_modules(self) -> list[nn.Module]:
        """The magnitude branch (encoder and decoder): trained in stage 1, frozen in stage 2."""
        return [self.encoder.magnitude, self.decoder.magnitude]

    def set_sign_positions(self, positions: torch.Tensor) -> None:
        """Use these `sign_length` flat (angle * 32 + delay) positions on both ends."""
        positions = torch.as_tensor(positions, dtype=torch.long).flatten().sort().values
        if positions.numel() != self.config.sign_length:
            raise ShapeError(
                f"sign positions: expected {self.config.sign_length}, got {positions.numel()}"
            )
        if positions.unique().numel() != positions.numel() or not (
            int(positions.min()) >= 0 and int(positions.max()) < ENTRIES
        ):
            raise ValueError(f"sign positions must be distinct indices in [0, {ENTRIES})")
        self.encoder.sign_positions.copy_(positions)
        self.decoder.sign_positions.copy_(positions)

    def set_magnitude_gain(self, gain: float) -> None:
        """Use the magnitude gain g on both ends (see the module docstring)."""
        if not (math.isfinite(gain) and gain > 0):
            raise ValueError(f"magnitude gain must be finite and positive, got {gain}")
        self.encoder.magnitude_gain.fill_(gain)
        self.decoder.magnitude_gain.fill_(gain)
