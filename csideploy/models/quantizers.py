"""Codeword quantizers for the UE -> BS feedback link, trainable end to end.

- `SumOfSigmoidQuantizer` (SSQ, DualNet-MAG / DualNet-MP): a staircase of 2**bits - 1 sigmoids.
  In training it is the smooth sum of sigmoids (differentiable everywhere); in eval it is the
  hard staircase, which equals `clamp(ceil(t - 0.5), qmin, qmax)` with `t = u * 2**(bits-1)`.
  Input `u` in [-1, 1] (a tanh output), output the signed integer level in
  [-2**(bits-1), 2**(bits-1) - 1]; the BS maps a level back with `dequantize` (level / 2**(bits-1)).
- `LearnedScaleQuantizer` (LSQ, LORA eq. 27-32, after Esser et al.): signed grid
  `q = round(clip(r / s, -2**(bits-1), 2**(bits-1) - 1))`, `r_hat = q * s`, learnable `s`.
- `LearnedScaleZeroQuantizer` (LSZQ, LORA eq. 27-33): unsigned grid
  `q = round(clip((r - z) / s, 0, 2**bits - 1))`, `r_hat = q * s + z`, learnable `s` and `z`
  (`z` is a real-valued offset, as in the paper's eq. 30, not an integer zero point).

Rounding is straight-through (eq. 31): the forward pass rounds, the backward pass treats the
rounding as the identity, which yields exactly the paper's eq. 32-33 gradients: inside the
clipping range d r_hat / d r = 1, d r_hat / d s = round(v) - v, d r_hat / d z = 0; outside,
d r_hat / d r = 0, d r_hat / d s = the clipping bound, d r_hat / d z = 1. The gradient of
`s` is further scaled by `g = 1 / sqrt(numel * qmax)` (Esser et al.) unless `grad_scale=False`.

The learned scale is stored as `log_scale` and the zero point in units of the initial scale
(see `LearnedQuantizer`): the same (s, z) model and gradients, with optimizer steps relative to
the codeword's size.

The learned quantizers split into `quantize` (UE: float -> integer-valued float, what is sent)
and `dequantize` (BS: integer -> float), so a model can put the cut between them;
`to_integer` is the UE's exported form (an integer dtype tensor), and `spec()` gives the
figures a deployment manifest needs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

QUANTIZERS = ("lsq", "lszq")
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer (ties to even) with an identity gradient."""
    return x + (torch.round(x) - x).detach()


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """`x` in the forward pass; its gradient multiplied by `factor` in the backward pass."""
    scaled = x * factor
    return (x - scaled).detach() + scaled


def _check_bits(bits: int) -> int:
    if bits not in SUPPORTED_BITS:
        raise ValueError(f"bits must be one of {SUPPORTED_BITS}, got {bits}")
    return bits


@dataclass(frozen=True)
class QuantizerSpec:
    """What a receiver needs to turn the integer codeword back into floats.

    `real = q * scale + zero_point` for every integer `q` in [qmin, qmax], carried as `dtype`.
    """

    scheme: str
    bits: int
    qmin: int
    qmax: int
    dtype: str
    scale: float
    zero_point: float
    formula: str = "real = q * scale + zero_point"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SumOfSigmoidQuantizer(nn.Module):
    """SSQ: `bits`-bit uniform staircase on [-1, 1], soft (sum of sigmoids) while training.

    `steepness` is the sigmoid slope per quantization step (25 in the DualNet-MP public code).
    With `straight_through=True` the training forward pass is the hard staircase and only the
    gradient comes from the soft one.
    """

    def __init__(self, bits: int = 8, steepness: float = 25.0, straight_through: bool = False):
        super().__init__()
        self.bits = _check_bits(bits)
        if not steepness > 0:
            raise ValueError(f"steepness must be positive, got {steepness}")
        self.steepness = float(steepness)
        self.straight_through = straight_through
        self.qmin = -(2 ** (bits - 1))
        self.qmax = 2 ** (bits - 1) - 1
        self.register_buffer(
            "thresholds",
            torch.arange(self.qmin, self.qmax, dtype=torch.float32) + 0.5,
            persistent=False,
        )

    @property
    def half_range(self) -> int:
        """Levels per unit of input: u = 1 maps to level 2**(bits-1) before clipping."""
        return 2 ** (self.bits - 1)

    def soft(self, u: torch.Tensor) -> torch.Tensor:
        """The smooth staircase: qmin + sum_i sigmoid(steepness * (t - threshold_i))."""
        t = (u * self.half_range).unsqueeze(-1)
        steps = torch.sigmoid(self.steepness * (t - self.thresholds))
        return self.qmin + steps.sum(dim=-1)

    def hard(self, u: torch.Tensor) -> torch.Tensor:
        """The staircase's limit: the number of thresholds below t, offset by qmin."""
        t = u * self.half_range
        return torch.clamp(torch.ceil(t - 0.5), self.qmin, self.qmax)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Quantization level of `u` (integer-valued in eval; soft while training)."""
        if not self.training:
            return self.hard(u)
        soft = self.soft(u)
        if self.straight_through:
            return soft + (self.hard(u) - soft).detach()
        return soft

    def to_integer(self, u: torch.Tensor) -> torch.Tensor:
        """The level as an integer tensor (int8 for up to 8 bits): what the UE transmits."""
        return self.hard(u).to(torch.int8)

    def dequantize(self, level: torch.Tensor) -> torch.Tensor:
        """BS side: level / 2**(bits-1), back in [-1, 1)."""
        return level / self.half_range

    def spec(self) -> QuantizerSpec:
        return QuantizerSpec(
            scheme="ssq",
            bits=self.bits,
            qmin=self.qmin,
            qmax=self.qmax,
            dtype="int8",
            scale=1.0 / self.half_range,
            zero_point=0.0,
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, steepness={self.steepness}"


class LearnedQuantizer(nn.Module):
    """Shared machinery of LSQ and LSZQ: grid, lazy data-driven init, STE quantization.

    The trainable tensors are `log_scale` (s = exp(log_scale)) and, for LSZQ, `zero_level`
    (z = zero_level * unit, `unit` being the initial scale). The model and its gradients are
    those of eq. 27-33 in (s, z); the parameterisation only makes an optimizer's step
    relative: Adam moves a parameter by about its learning rate per step, which for a raw
    scale of 1e-4 (small codewords of [0, 1]-offset CSI) would be a jump of 10x.
    """

    scheme = ""
    signed = True
    learn_zero_point = False

    def __init__(self, bits: int = 8, *, grad_scale: bool = True) -> None:
        super().__init__()
        self.bits = _check_bits(bits)
        self.grad_scale = grad_scale
        if self.signed:
            self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            self.qmin, self.qmax = 0, 2**bits - 1
        self.log_scale = nn.Parameter(torch.tensor(0.0))
        self.register_buffer("unit", torch.tensor(1.0))
        if self.learn_zero_point:
            self.zero_level = nn.Parameter(torch.tensor(0.0))
        else:
            self.register_buffer("zero_level", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    @property
    def scale(self) -> torch.Tensor:
        """s, differentiable with respect to `log_scale`."""
        return torch.exp(self.log_scale)

    @property
    def zero_point(self) -> torch.Tensor:
        """z (a real-valued offset), differentiable with respect to `zero_level`."""
        return self.zero_level * self.unit

    @property
    def integer_dtype(self) -> torch.dtype:
        return torch.int8 if self.signed else torch.uint8

    def set_parameters(self, scale: float, zero_point: float = 0.0) -> None:
        """Set s and z (z is ignored by LSQ) and mark the quantizer initialised."""
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        with torch.no_grad():
            self.log_scale.fill_(math.log(scale))
            self.unit.fill_(scale)
            self.zero_level.fill_(zero_point / scale if self.learn_zero_point else 0.0)
            self.initialized.fill_(True)

    def initialize(self, r: torch.Tensor) -> None:
        """Set scale (and zero point) from a batch of codewords; done once, on first training."""
        raise NotImplementedError

    def _scale(self, r: torch.Tensor) -> torch.Tensor:
        scale = self.scale
        if self.grad_scale and self.training:
            per_sample = r[0].numel() if r.dim() > 1 else r.numel()
            scale = scale_gradient(scale, 1.0 / math.sqrt(per_sample * max(self.qmax, 1)))
        return scale

    def quantize(self, r: torch.Tensor) -> torch.Tensor:
        """UE side: integer-valued float levels `round(clip((r - z) / s, qmin, qmax))` (STE)."""
        if self.training and not bool(self.initialized):
            self.initialize(r.detach())
        v = torch.clamp((r - self.zero_point) / self._scale(r), self.qmin, self.qmax)
        return round_ste(v)

    def dequantize(self, q: torch.Tensor) -> torch.Tensor:
        """BS side: `q * s + z` (eq. 30)."""
        return q * self._scale(q) + self.zero_point

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Fake quantization: what the BS recovers from `r`."""
        return self.dequantize(self.quantize(r))

    def to_integer(self, r: torch.Tensor) -> torch.Tensor:
        """The transmitted integers in the smallest integer dtype of the grid."""
        v = torch.clamp((r - self.zero_point) / self.scale, self.qmin, self.qmax)
        return torch.round(v).to(self.integer_dtype)

    def spec(self) -> QuantizerSpec:
        return QuantizerSpec(
            scheme=self.scheme,
            bits=self.bits,
            qmin=self.qmin,
            qmax=self.qmax,
            dtype=str(self.integer_dtype).removeprefix("torch."),
            scale=float(self.scale.detach()),
            zero_point=float(self.zero_point.detach()),
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range=[{self.qmin}, {self.qmax}]"


class LearnedScaleQuantizer(LearnedQuantizer):
    """LSQ: signed grid, learnable scale, zero point fixed at 0."""

    scheme = "lsq"
    signed = True
    learn_zero_point = False

    def initialize(self, r: torch.Tensor) -> None:
        # Esser et al.: s = 2 <|r|> / sqrt(qmax).
        self.set_parameters(max(2.0 * float(r.abs().mean()) / math.sqrt(self.qmax), 1e-8))


class LearnedScaleZeroQuantizer(LearnedQuantizer):
    """LSZQ: unsigned grid, learnable scale and real-valued zero point (offset)."""

    scheme = "lszq"
    signed = False
    learn_zero_point = True

    def initialize(self, r: torch.Tensor) -> None:
        low, high = float(r.min()), float(r.max())
        self.set_parameters(max((high - low) / (self.qmax - self.qmin), 1e-8), low)


def make_quantizer(name: str | None, bits: int = 8) -> LearnedQuantizer | None:
    """`None`, or an LSQ / LSZQ quantizer with `bits` bits."""
    if name is None:
        return None
    if name == "lsq":
        return LearnedScaleQuantizer(bits)
    if name == "lszq":
        return LearnedScaleZeroQuantizer(bits)
    raise ValueError(f"unknown quantizer {name!r}; choose one of {QUANTIZERS} or None")
