"""DualNet-MP building blocks: the configuration, its constants and circular convolutions."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

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


def circular_stack(
    channels: tuple[int, ...], kernel: int, activation: Callable[[], nn.Module], last: nn.Module
) -> nn.Sequential:
    """CircularConv2d layers channels[i] -> channels[i+1], `activation` between, `last` after."""
    seq = nn.Sequential()
    for i in range(len(channels) - 1):
        seq.add_module(f"cconv{i + 1}", CircularConv2d(channels[i], channels[i + 1], kernel))
        seq.add_module(f"act{i + 1}", last if i == len(channels) - 2 else activation())
    return seq
