"""The handset graph of a model whose codeword is sent as integers, and what the BS needs.

Most zoo encoders emit a float codeword and the handset graph is the encoder itself. Two seed
systems quantize inside the model: LORA's LSQ / LSZQ codeword and DualNet-MP's SSQ levels plus
sign bits. Their handset graph ends in an integer cast and may have several outputs, and the
base station has to know how to turn those integers back into the decoder's flat float
codeword. A model declares this with `UeGraph` (through `register_model(ue_graph=...)`):

- `module`: CSI (N, 2, 32, 32) -> one tensor or a tuple of tensors, in `parts` order;
- `parts`: name, length, dtype and meaning of each output (with the dequantization rule of
  learned quantizers);
- `bits_per_report`: what one CSI report costs on the air.

The decoder's codeword is always `flat_codeword(outputs)`: the outputs cast to float32 and
concatenated in `parts` order (the float encoder returns exactly this).

A BS decoder that needs more than the codeword (DualNet-MP's uplink CSI) declares a
`SideInput`; the export feeds it from paired evaluation data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

INTEGER_DTYPES = ("int8", "uint8", "int16", "int32")


@dataclass(frozen=True)
class CodewordPart:
    """One output of the handset graph."""

    name: str
    length: int
    dtype: str
    description: str
    bits: int | None = None
    """Bits per entry on the air (None: as the dtype)."""
    quantization: Mapping[str, Any] | None = None
    """How the BS maps an integer back to a real value (scheme, scale, zero point, formula)."""

    def __post_init__(self) -> None:
        if self.length < 1:
            raise ValueError(f"{self.name}: length must be >= 1, got {self.length}")
        if self.dtype not in (*INTEGER_DTYPES, "float32"):
            raise ValueError(f"{self.name}: unsupported dtype {self.dtype!r}")

    @property
    def is_integer(self) -> bool:
        return self.dtype in INTEGER_DTYPES

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "length": self.length,
            "dtype": self.dtype,
            "description": self.description,
        }
        if self.bits is not None:
            out["bits"] = self.bits
        if self.quantization is not None:
            out["quantization"] = dict(self.quantization)
        return out


@dataclass(frozen=True)
class UeGraph:
    """What ships to the handset for an integer-codeword model (see the module docstring)."""

    module: nn.Module
    parts: tuple[CodewordPart, ...]
    bits_per_report: int
    notes: Mapping[str, Any] = field(default_factory=dict)
    """Model-specific facts for the manifest (e.g. DualNet-MP's feedback-bit breakdown)."""

    def __post_init__(self) -> None:
        if not self.parts:
            raise ValueError("a UE graph needs at least one output")
        names = [p.name for p in self.parts]
        if len(set(names)) != len(names) or "csi" in names:
            raise ValueError(f"output names must be distinct and not 'csi', got {names}")

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)

    @property
    def codeword_length(self) -> int:
        return sum(p.length for p in self.parts)

    @property
    def integer(self) -> bool:
        """Every output is integer: the codeword is compared in levels, not in max-abs."""
        return all(p.is_integer for p in self.parts)

    def describe(self) -> dict[str, Any]:
        """The manifest's `codeword` section."""
        return {
            "parts": [p.to_dict() for p in self.parts],
            "length": self.codeword_length,
            "bits_per_report": self.bits_per_report,
            "decoder_codeword": (
                "the outputs cast to float32 and concatenated in this order: "
                + " | ".join(f"{p.name} ({p.length})" for p in self.parts)
            ),
            **dict(self.notes),
        }


@dataclass(frozen=True)
class SideInput:
    """An extra BS-decoder input, fed from paired evaluation data (e.g. the uplink CSI)."""

    name: str
    shape: tuple[int, ...]
    description: str


def flat_codeword(outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The decoder's float codeword: every output as float32 (N, length), concatenated."""
    if not outputs:
        raise ValueError("no outputs to concatenate")
    rows = len(outputs[0])
    parts = [np.asarray(y).reshape(rows, -1).astype(np.float32) for y in outputs]
    return np.concatenate(parts, axis=1)
