"""LORA (learnable optimization and regularization algorithm), a model-driven CSI-feedback network.

Encoder (UE): one learnable measurement matrix A (M x 2NtNc), a Linear layer without bias:
`v = A x` (eq. 16) with x the vectorised CSI, then optionally a learned quantizer (LSQ or
LSZQ, eq. 27-33) whose integer-valued levels are the codeword.

Decoder (BS): dequantize, then T unfolded gradient steps on `1/2 ||v - A x||^2 + R(x)`
(eq. 24), starting from x0 = 0:

    x_t = x_{t-1} - a_t (A^T (A x_{t-1} - v) + MLP(x_{t-1})),  t = 1..T

with A tied to the encoder's matrix, one MLP `W2 relu(W1 x)` (2NtNc -> 1024 -> 2NtNc, no
biases, eq. 25) shared by every block as the learned gradient of the regulariser, and a learnable
step size a_t per block. T = 4 (Table IV's decoder count is 4 x (4 NtNc x 1024 + 1)).

Input: the paper works on the cropped angular-delay CSI, real and imaginary parts, near zero
(hence x0 = 0); it states no offset. The project's tensors are COST2100-style (N, 2, 32, 32) in
[0, 1] with 0.5 meaning zero, so the encoder subtracts 0.5 before A (x = csi - 0.5, inside the
UE graph, so the handset feeds the same tensor as for every other model) and the decoder adds
0.5 back. The output is not clipped to [0, 1].

Parameter counts at NtNc = 1024 (2NtNc = 2048), M = 2048 / cr:

  CR     encoder (A)   decoder, paper's count   decoder held by the BS   trainable total
  1/4    1,048,576     16,777,220               5,242,884                5,242,884
  1/64      65,536     16,777,220               4,259,844                4,259,844

The paper (Table IV) counts the shared MLP once per block and leaves A to the encoder:
T * (4NtNc * 1024 + 1). Here `decoder` holds A as well (the BS needs the same matrix; the
module is shared with the encoder, so `count_params(model)` counts it once and equals the
paper's trainable count (2M + 4096) NtNc + 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from csideploy.models.quantizers import (
    QUANTIZERS,
    LearnedQuantizer,
    QuantizerSpec,
    make_quantizer,
)
from csideploy.models.registry import (
    CSI_SHAPE,
    CSI_SIZE,
    STANDARD_CRS,
    CsiAutoencoder,
    InputSpec,
    PublishedFigures,
    register_model,
)
from csideploy.models.ue_graph import CodewordPart, UeGraph

HIDDEN = 1024
DEFAULT_BLOCKS = 4
DEFAULT_STEP_SIZE = 0.5
ZERO_OFFSET = 0.5
TABLE_IV = {4: (1_048_576, 16_777_220), 64: (65_536, 16_777_220)}
"""(encoder, decoder) parameter counts of LORA in the paper's Table IV."""


@dataclass(frozen=True)
class LoraConfig:
    """Options of `build("lora", cr, ...)`."""

    cr: int = 4
    blocks: int = DEFAULT_BLOCKS
    hidden: int = HIDDEN
    quantizer: str | None = None
    bits: int = 8
    step_size: float = DEFAULT_STEP_SIZE

    def __post_init__(self) -> None:
        if self.cr <= 0 or CSI_SIZE % self.cr:
            raise ValueError(f"cr must divide {CSI_SIZE}, got {self.cr}")
        if self.blocks < 1:
            raise ValueError(f"blocks must be at least 1, got {self.blocks}")
        if self.hidden < 1:
            raise ValueError(f"hidden must be at least 1, got {self.hidden}")
        if self.quantizer is not None and self.quantizer not in QUANTIZERS:
            raise ValueError(
                f"quantizer must be one of {QUANTIZERS} or None, got {self.quantizer!r}"
            )
        if self.quantizer is not None and self.bits not in (4, 8):
            raise ValueError(f"bits must be 4 or 8, got {self.bits}")

    @property
    def codeword_length(self) -> int:
        return CSI_SIZE // self.cr


class LoraEncoder(nn.Module):
    """`v = A (csi - 0.5)`, quantized to integer-valued levels when a quantizer is set."""

    def __init__(self, codeword_length: int, quantizer: LearnedQuantizer | None) -> None:
        super().__init__()
        self.measurement = nn.Linear(CSI_SIZE, codeword_length, bias=False)
        self.quantizer = quantizer

    def project(self, csi: torch.Tensor) -> torch.Tensor:
        """The float measurement `A x` (before quantization)."""
        return self.measurement(csi.flatten(1) - ZERO_OFFSET)

    def forward(self, csi: torch.Tensor) -> torch.Tensor:
        v = self.project(csi)
        return v if self.quantizer is None else self.quantizer.quantize(v)


class RegularizerMlp(nn.Sequential):
    """The learned regulariser gradient: W2 relu(W1 x), no biases (eq. 25)."""

    def __init__(self, size: int = CSI_SIZE, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.add_module("fc1", nn.Linear(size, hidden, bias=False))
        self.add_module("relu", nn.ReLU())
        self.add_module("fc2", nn.Linear(hidden, size, bias=False))


class LoraDecoder(nn.Module):
    """Dequantize, then T unfolded steps `x <- x - a_t (A^T (A x - v) + MLP(x))` from x = 0."""

    def __init__(
        self,
        measurement: nn.Linear,
        quantizer: LearnedQuantizer | None,
        *,
        blocks: int = DEFAULT_BLOCKS,
        hidden: int = HIDDEN,
        step_size: float = DEFAULT_STEP_SIZE,
    ) -> None:
        super().__init__()
        self.measurement = measurement  # the encoder's module: A is tied, not copied
        self.quantizer = quantizer
        self.regularizer = RegularizerMlp(CSI_SIZE, hidden)
        self.step_sizes = nn.Parameter(torch.full((blocks,), float(step_size)))

    @property
    def blocks(self) -> int:
        return self.step_sizes.numel()

    def iterates(self, codeword: torch.Tensor) -> list[torch.Tensor]:
        """x_1 ... x_T as flat (N, 2048) zero-centred vectors (for per-block diagnostics)."""
        v = codeword if self.quantizer is None else self.quantizer.dequantize(codeword)
        a = self.measurement.weight
        x = v.new_zeros(v.shape[0], a.shape[1])
        out = []
        for t in range(self.blocks):
            residual = x @ a.t() - v
            x = x - self.step_sizes[t] * (residual @ a + self.regularizer(x))
            out.append(x)
        return out

    def forward(self, codeword: torch.Tensor) -> torch.Tensor:
        x = self.iterates(codeword)[-1]
        return (x + ZERO_OFFSET).reshape(x.shape[0], *CSI_SHAPE)


class UeIntegerEncoder(nn.Module):
    """The handset graph of a quantized LORA: CSI -> integer codeword (int8 LSQ, uint8 LSZQ)."""

    def __init__(self, encoder: LoraEncoder) -> None:
        super().__init__()
        if encoder.quantizer is None:
            raise ValueError("this LORA has no quantizer; its encoder already is the UE graph")
        self.encoder = encoder

    def forward(self, csi: torch.Tensor) -> torch.Tensor:
        return self.encoder.quantizer.to_integer(self.encoder.project(csi))


def ue_encoder(model: CsiAutoencoder) -> nn.Module:
    """The module that ships to the handset, in eval mode.

    Quantized LORA: outputs the integer codeword (int8 for LSQ, uint8 for LSZQ); the BS
    recovers `q * scale + zero_point` (see `quantization_spec`). Unquantized: the float
    encoder itself.
    """
    encoder = model.encoder
    if not isinstance(encoder, LoraEncoder):
        raise TypeError(f"not a LORA model: {type(model).__name__} ({model.model_name})")
    ue = encoder if encoder.quantizer is None else UeIntegerEncoder(encoder)
    return ue.eval()


def quantization_spec(model: CsiAutoencoder) -> QuantizerSpec | None:
    """Scheme, bits, integer range, dtype, scale and zero point of the codeword, or None."""
    quantizer = model.encoder.quantizer
    return None if quantizer is None else quantizer.spec()


def ue_graph(model: CsiAutoencoder) -> UeGraph | None:
    """A quantized LORA's handset graph (one integer codeword); None for a float LORA."""
    spec = quantization_spec(model)
    if spec is None:
        return None
    return UeGraph(
        module=ue_encoder(model),
        parts=(
            CodewordPart(
                "codeword",
                model.codeword_length,
                spec.dtype,
                f"{spec.scheme.upper()} levels of A (csi - 0.5)",
                bits=spec.bits,
                quantization=spec.as_dict(),
            ),
        ),
        bits_per_report=spec.bits * model.codeword_length,
    )


def table_iv_counts(model: CsiAutoencoder) -> tuple[int, int]:
    """(encoder, decoder) parameters counted as the paper's Table IV does.

    Encoder: A. Decoder: the MLP once per block plus one step size per block (A is left to
    the encoder, the quantizer is not counted).
    """
    decoder = model.decoder
    mlp = sum(p.numel() for p in decoder.regularizer.parameters())
    return model.encoder.measurement.weight.numel(), decoder.blocks * (mlp + 1)


def make_lora(config: LoraConfig) -> CsiAutoencoder:
    """A LORA autoencoder from a validated config (registered as `lora`)."""
    m = config.codeword_length
    quantizer = make_quantizer(config.quantizer, config.bits)
    encoder = LoraEncoder(m, quantizer)
    decoder = LoraDecoder(
        encoder.measurement,
        quantizer,
        blocks=config.blocks,
        hidden=config.hidden,
        step_size=config.step_size,
    )
    return CsiAutoencoder(encoder, decoder, name="lora", cr=config.cr, codeword_length=m)


@register_model(
    "lora",
    summary="LORA: linear measurement encoder, unfolded learned-regulariser decoder (T=4)",
    codeword_key="encoder.measurement.weight",
    crs=STANDARD_CRS,
    published={cr: PublishedFigures(params_encoder=TABLE_IV[cr][0]) for cr in TABLE_IV},
    input_spec=InputSpec(
        description=(
            "angular-delay CSI, channels (real, imag) x 32 angle x 32 delay, scaled to "
            "[0, 1] with 0.5 meaning zero; the encoder subtracts 0.5 before A"
        )
    ),
    ue_graph=ue_graph,
)
def lora(
    cr: int,
    *,
    quantizer: str | None = None,
    bits: int = 8,
    blocks: int = DEFAULT_BLOCKS,
    hidden: int = HIDDEN,
) -> CsiAutoencoder:
    """LORA at CR 1/cr, optionally with an LSQ / LSZQ codeword quantizer of 4 or 8 bits.

    The options are kept on the model as `build_options` (a checkpoint of a quantized or
    resized LORA must be rebuilt with them before its weights load).
    """
    model = make_lora(
        LoraConfig(cr=cr, blocks=blocks, hidden=hidden, quantizer=quantizer, bits=bits)
    )
    model.build_options = {"quantizer": quantizer, "bits": bits, "blocks": blocks, "hidden": hidden}
    return model
