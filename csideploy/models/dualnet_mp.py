"""DualNet-MP (Lin, Liu, Lee, Ding, "Deep learning phase compression for MIMO CSI feedback by
exploiting FDD channel reciprocity"; seed `dualnet_mp.txt`).

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
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from csideploy.errors import ShapeError
from csideploy.models.blocks import LEAKY_SLOPE, leaky
from csideploy.models.quantizers import SumOfSigmoidQuantizer
from csideploy.models.registry import (
    CsiAutoencoder,
    InputSpec,
    check_input,
    register_model,
)
from csideploy.models.ue_graph import CodewordPart, SideInput, UeGraph

GRID = 32
"""Qt = Nb = 32: the angular-delay matrix is 32 x 32."""
ENTRIES = GRID * GRID
CHANNELS = (16, 8, 4, 1)
PHASE_CRS = (8, 16)
DEFAULT_SIGN_RATIO = {8: 0.25, 16: 0.125}
PAPER_PARAMS_CR8 = 826_000
"""The paper's "826K" parameters of the C-CNN DualNet-MP (CR_PHA = 1/8)."""
ZERO_OFFSET = 0.5
MAGNITUDE_SCALE = math.sqrt(2.0)
"""|H| of [0, 1]-offset data is at most 1/sqrt(2); m = sqrt(2) |H| lies in [0, 1]."""


@dataclass(frozen=True)
class DualNetMPConfig:
    """Options of `build("dualnet-mp", cr, ...)`; `phase_reduction` is the registry CR."""

    phase_reduction: int = 8
    magnitude_reduction: int = 4
    phase_bits: int = 8
    magnitude_bits: int = 8
    sign_ratio: float | None = None
    steepness: float = 25.0
    kernel: int = 7
    combine_kernel: int = 5
    combine_width: int = 16

    def __post_init__(self) -> None:
        for name in ("phase_reduction", "magnitude_reduction"):
            value = getattr(self, name)
            if value <= 0 or ENTRIES % value:
                raise ValueError(f"{name} must divide {ENTRIES}, got {value}")
        if self.sign_ratio is not None and not 0.0 < self.sign_ratio <= 1.0:
            raise ValueError(f"sign_ratio must be in (0, 1], got {self.sign_ratio}")
        for name in ("kernel", "combine_kernel"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise ValueError(f"{name} must be an odd positive size, got {value}")

    @property
    def rs(self) -> float:
        """The sign reduction ratio, defaulting by phase CR (0.25 at 1/8, 0.125 at 1/16)."""
        if self.sign_ratio is not None:
            return self.sign_ratio
        return DEFAULT_SIGN_RATIO.get(self.phase_reduction, 0.25)

    @property
    def magnitude_length(self) -> int:
        return ENTRIES // self.magnitude_reduction

    @property
    def phase_length(self) -> int:
        return ENTRIES // self.phase_reduction

    @property
    def sign_length(self) -> int:
        return max(1, round(self.rs * ENTRIES))

    @property
    def codeword_length(self) -> int:
        return self.magnitude_length + self.phase_length + self.sign_length


# --------------------------------------------------------------------------- circular conv


def circular_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Wrap-pad the last two axes by `pad` on each side (slice + concatenate)."""
    if pad == 0:
        return x
    x = torch.cat((x[..., -pad:], x, x[..., :pad]), dim=-1)
    return torch.cat((x[..., -pad:, :], x, x[..., :pad, :]), dim=-2)


class CircularConv2d(nn.Module):
    """k x k convolution of a periodic 2-D signal: wrap padding, then an unpadded Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(circular_pad(x, self.pad))


def _circular_stack(
    channels: tuple[int, ...], kernel: int, activation: Callable[[], nn.Module], last: nn.Module
) -> nn.Sequential:
    """CircularConv2d layers channels[i] -> channels[i+1], `activation` between, `last` after."""
    seq = nn.Sequential()
    for i in range(len(channels) - 1):
        seq.add_module(f"cconv{i + 1}", CircularConv2d(channels[i], channels[i + 1], kernel))
        seq.add_module(f"act{i + 1}", last if i == len(channels) - 2 else activation())
    return seq


# --------------------------------------------------------------------------- UE side


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
        self.features = _circular_stack((1, *CHANNELS), kernel, activation, activation())
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


# --------------------------------------------------------------------------- BS side


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
        self.features = _circular_stack((2, *CHANNELS), kernel, activation, last)

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


# --------------------------------------------------------------------------- public helpers


def _as_model(model: nn.Module) -> DualNetMP:
    if not isinstance(model, DualNetMP):
        raise TypeError(f"not a DualNet-MP model: {type(model).__name__}")
    return model


def ue_encoder(model: nn.Module) -> nn.Module:
    """The handset graph in eval mode: CSI (N, 2, 32, 32) in [0, 1] -> three integer outputs
    (magnitude levels int8 (N, M_MAG), phase levels int8 (N, M_PHA), sign bits uint8 (N, K_S)).
    """
    return UeThreeOutputEncoder(_as_model(model).encoder).eval()


@dataclass(frozen=True)
class FeedbackBits:
    """Feedback payload of one CSI report, in bits (eq. 15 plus the magnitude codeword)."""

    magnitude: int
    phase_codeword: int
    sign: int
    phase: int
    total: int
    phase_bits_per_entry: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def feedback_bits(model: nn.Module) -> FeedbackBits:
    """Bits per report: K_MAG M_MAG + (K_PHA M_PHA + Rs Qt Nb) (eq. 15 for the phase part)."""
    config = _as_model(model).config
    magnitude = config.magnitude_bits * config.magnitude_length
    phase_codeword = config.phase_bits * config.phase_length
    sign = config.sign_length
    phase = phase_codeword + sign
    return FeedbackBits(
        magnitude=magnitude,
        phase_codeword=phase_codeword,
        sign=sign,
        phase=phase,
        total=magnitude + phase,
        phase_bits_per_entry=phase / ENTRIES,
    )


def ue_graph(model: nn.Module) -> UeGraph:
    """The handset graph and its three outputs, for the export recipe and the manifest."""
    m = _as_model(model)
    config, encoder = m.config, m.encoder
    bits = feedback_bits(m)
    return UeGraph(
        module=ue_encoder(m),
        parts=(
            CodewordPart(
                "magnitude",
                config.magnitude_length,
                "int8",
                "SSQ levels of the magnitude codeword (tanh output x 2**(K-1), rounded)",
                bits=config.magnitude_bits,
                quantization=encoder.magnitude.quantizer.spec().as_dict(),
            ),
            CodewordPart(
                "phase",
                config.phase_length,
                "int8",
                "SSQ levels of the cosine (phase) codeword",
                bits=config.phase_bits,
                quantization=encoder.phase.quantizer.spec().as_dict(),
            ),
            CodewordPart(
                "sign",
                config.sign_length,
                "uint8",
                "sign of sin(angle H) at the fixed sign positions: 1 = sin >= 0, 0 = negative",
                bits=1,
            ),
        ),
        bits_per_report=bits.total,
        notes={
            "feedback_bits": bits.as_dict(),
            "sign_positions": [int(i) for i in encoder.sign_positions.tolist()],
            "magnitude_gain": float(encoder.magnitude_gain),
        },
    )


UL_SIDE_INPUT = SideInput(
    name="ul_csi",
    shape=(2, GRID, GRID),
    description=(
        "uplink CSI of the same UE (same layout and scale as the DL input); the BS decoder "
        "uses its magnitude as side information"
    ),
)


def param_breakdown(model: nn.Module) -> dict[str, int]:
    """Learnable parameters per part: the two encoders, two decoders and the combining net."""
    m = _as_model(model)

    def count(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    return {
        "magnitude_encoder": count(m.encoder.magnitude),
        "phase_encoder": count(m.encoder.phase),
        "magnitude_decoder": count(m.decoder.magnitude),
        "phase_decoder": count(m.decoder.phase),
        "combining": count(m.decoder.combine),
        "total": count(m),
    }


def fit_sign_positions(model: nn.Module, dl: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Choose the Rs * 1024 entries of largest mean DL magnitude in `dl`; set them on both ends."""
    m = _as_model(model)
    x = torch.as_tensor(np.asarray(dl, dtype=np.float32))
    check_input(x, InputSpec(), "dl")
    mean_mag = csi_features(x).magnitude.mean(dim=(0, 1)).flatten()
    positions = torch.topk(mean_mag, m.config.sign_length).indices
    m.set_sign_positions(positions)
    return m.encoder.sign_positions.clone()


def fit_magnitude_gain(model: nn.Module, dl: torch.Tensor | np.ndarray) -> float:
    """Set g = 1 / RMS(sqrt(2) |H|) over `dl` on both ends, so the magnitudes the networks see
    have unit RMS; returns g. All-zero CSI (every entry 0.5) has no scale and is an error."""
    m = _as_model(model)
    x = torch.as_tensor(np.asarray(dl, dtype=np.float32))
    check_input(x, InputSpec(), "dl")
    rms = float(csi_features(x).magnitude.double().pow(2).mean().sqrt())
    if not rms > 0:
        raise ValueError(
            "dl: every CSI entry is zero (0.5 in the [0, 1] layout); no magnitude scale"
        )
    m.set_magnitude_gain(1.0 / rms)
    return float(m.encoder.magnitude_gain)


# --------------------------------------------------------------------------- training


def smape_loss(
    magnitude: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    magnitude_hat: torch.Tensor,
    cos_hat: torch.Tensor,
    sin_hat: torch.Tensor,
) -> torch.Tensor:
    """Eq. 13: ||m Cos - m_hat Cos_hat||^2 + ||m Sin - m_hat Sin_hat||^2, mean per entry."""
    real = magnitude * cos - magnitude_hat * cos_hat
    imag = magnitude * sin - magnitude_hat * sin_hat
    return (real * real + imag * imag).mean()


@dataclass(frozen=True)
class DualNetMPTrainResult:
    """Per-epoch mean training losses of both stages, in units of g sqrt(2) |H|."""

    stage1_loss: tuple[float, ...]
    """Eq. 5: MSE of the magnitude."""
    stage2_loss: tuple[float, ...]
    """Eq. 13 SMAPE of the preliminary estimate + MSE of the combined estimate."""
    sign_positions: tuple[int, ...]
    magnitude_gain: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _paired_tensors(
    dl: torch.Tensor | np.ndarray, ul: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    dl_t = torch.as_tensor(np.asarray(dl, dtype=np.float32))
    ul_t = torch.as_tensor(np.asarray(ul, dtype=np.float32))
    check_input(dl_t, InputSpec(), "dl")
    check_input(ul_t, InputSpec(), "ul")
    if len(dl_t) != len(ul_t):
        raise ShapeError(f"dl and ul must pair up: {len(dl_t)} vs {len(ul_t)} samples")
    return dl_t, ul_t


EpochCallback = Callable[[int, int, float], None]
"""`on_epoch(stage, epoch, mean_loss)` after every epoch; stage 1 or 2, epoch 1-based."""


def _run_stage(
    params: list[nn.Parameter],
    epochs: int,
    batches: Callable[[torch.Generator], list[torch.Tensor]],
    loss_of: Callable[[torch.Tensor], torch.Tensor],
    lr: float,
    generator: torch.Generator,
    after_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    optimizer = torch.optim.Adam(params, lr=lr)
    history = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for index in batches(generator):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of(index)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
            count += len(index)
        history.append(total / max(count, 1))
        if after_epoch is not None:
            after_epoch(epoch + 1, history[-1])
    return history


def _stage_callback(
    model: nn.Module, stage: int, on_epoch: EpochCallback | None
) -> Callable[[int, float], None] | None:
    """`on_epoch` for one stage, restoring every module's train / eval mode after it runs
    (the callback may evaluate the model; stage 2 keeps the frozen branch in eval mode)."""
    if on_epoch is None:
        return None

    def after_epoch(epoch: int, loss: float) -> None:
        modes = [(module, module.training) for module in model.modules()]
        try:
            on_epoch(stage, epoch, loss)
        finally:
            for module, training in modes:
                module.training = training

    return after_epoch


def train_dualnet_mp(
    model: nn.Module,
    dl: torch.Tensor | np.ndarray,
    ul: torch.Tensor | np.ndarray,
    epochs_stage1: int,
    epochs_stage2: int,
    *,
    batch_size: int = 200,
    lr: float = 1e-3,
    seed: int = 0,
    fit_to_data: bool = True,
    on_epoch: EpochCallback | None = None,
) -> DualNetMPTrainResult:
    """The paper's two-stage training, in place, on paired DL / UL CSI (N, 2, 32, 32).

    With `fit_to_data` the sign positions and the magnitude gain are first fitted to `dl`
    (`fit_sign_positions`, `fit_magnitude_gain`); otherwise the model's own are kept.
    Stage 1 trains the magnitude branch on eq. 5 (MSE of the magnitude). Stage 2 freezes it
    and trains the phase encoder, phase decoder and combining network on eq. 13 (SMAPE of the
    preliminary estimate) plus the MSE of the combined estimate (eq. 8), both in the units of
    `csi_features(x, g)`. Adam, constant learning rate (the public code's 1e-3).
    The data follow the model onto its device. `on_epoch(stage, epoch, mean_loss)` runs after
    every epoch (validation, progress); the modules' train / eval modes are restored after it.
    The model is left in eval mode.
    """
    m = _as_model(model)
    dl_t, ul_t = _paired_tensors(dl, ul)
    if fit_to_data:
        fit_sign_positions(m, dl_t)
        fit_magnitude_gain(m, dl_t)
    device = next(m.parameters()).device
    dl_t, ul_t = dl_t.to(device), ul_t.to(device)
    generator = torch.Generator().manual_seed(seed)

    def batches(gen: torch.Generator) -> list[torch.Tensor]:
        order = torch.randperm(len(dl_t), generator=gen).to(device)
        return list(order.split(batch_size))

    mag_params = [p for module in m.magnitude_modules() for p in module.parameters()]
    mag_ids = {id(p) for p in mag_params}
    other_params = [p for p in m.parameters() if id(p) not in mag_ids]

    gain = m.decoder.magnitude_gain

    def stage1_loss(index: torch.Tensor) -> torch.Tensor:
        x, side = dl_t[index], ul_magnitude(ul_t[index], gain)
        target = csi_features(x, gain).magnitude
        code = m.encoder.magnitude(target)
        estimate = m.decoder.magnitude(code / m.decoder.magnitude_levels, side)
        return F.mse_loss(estimate, target)

    m.train()
    stage1 = _run_stage(
        mag_params,
        epochs_stage1,
        batches,
        stage1_loss,
        lr,
        generator,
        _stage_callback(m, 1, on_epoch),
    )

    def stage2_loss(index: torch.Tensor) -> torch.Tensor:
        x = dl_t[index]
        truth = csi_features(x, gain)
        sin = truth.sign * torch.sqrt(torch.clamp(1.0 - truth.cos * truth.cos, min=0.0))
        parts = m.decoder.parts(m.encoder(x), ul_t[index])
        smape = smape_loss(truth.magnitude, truth.cos, sin, parts.magnitude, parts.cos, parts.sin)
        target = torch.cat((truth.magnitude * truth.cos, truth.magnitude * sin), dim=1)
        return smape + F.mse_loss(parts.combined, target, reduction="none").sum(1).mean()

    for p in mag_params:
        p.requires_grad_(False)
    for module in m.magnitude_modules():
        module.eval()  # the frozen branch runs as deployed: hard SSQ
    try:
        stage2 = _run_stage(
            other_params,
            epochs_stage2,
            batches,
            stage2_loss,
            lr,
            generator,
            _stage_callback(m, 2, on_epoch),
        )
    finally:
        for p in mag_params:
            p.requires_grad_(True)
        m.eval()
    return DualNetMPTrainResult(
        stage1_loss=tuple(stage1),
        stage2_loss=tuple(stage2),
        sign_positions=tuple(int(i) for i in m.encoder.sign_positions),
        magnitude_gain=float(gain),
    )


# --------------------------------------------------------------------------- registry


def make_dualnet_mp(config: DualNetMPConfig) -> DualNetMP:
    """A DualNet-MP from a validated config."""
    return DualNetMP(config)


@register_model(
    "dualnet-mp",
    summary="DualNet-MP: magnitude/phase C-CNN branches, SSQ, sign bits, UL magnitude at BS",
    codeword_key="encoder.phase.fc.weight",
    crs=PHASE_CRS,
    input_spec=InputSpec(
        description=(
            "DL angular-delay CSI, channels (real, imag) x 32 angle x 32 delay, scaled to "
            "[0, 1] with 0.5 meaning zero; the BS decoder also takes the UL CSI in the same "
            "layout as side information"
        )
    ),
    ue_graph=ue_graph,
    side_input=UL_SIDE_INPUT,
)
def dualnet_mp(
    cr: int,
    *,
    magnitude_reduction: int = 4,
    phase_bits: int = 8,
    magnitude_bits: int = 8,
    sign_ratio: float | None = None,
) -> DualNetMP:
    """DualNet-MP with phase compression 1/cr (the registry CR) and the given options, which
    are kept on the model as `build_options`."""
    model = make_dualnet_mp(
        DualNetMPConfig(
            phase_reduction=cr,
            magnitude_reduction=magnitude_reduction,
            phase_bits=phase_bits,
            magnitude_bits=magnitude_bits,
            sign_ratio=sign_ratio,
        )
    )
    model.build_options = {
        "magnitude_reduction": magnitude_reduction,
        "phase_bits": phase_bits,
        "magnitude_bits": magnitude_bits,
        "sign_ratio": sign_ratio,
    }
    return model
