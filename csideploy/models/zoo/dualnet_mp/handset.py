"""DualNet-MP on the handset: the three-output UE graph, feedback bits, fitted sign positions and
magnitude gain."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.models.registry import (
    InputSpec,
    check_input,
)
from csideploy.models.ue_graph import CodewordPart, SideInput, UeGraph
from csideploy.models.zoo.dualnet_mp.layers import (
    ENTRIES,
    GRID,
)
from csideploy.models.zoo.dualnet_mp.model import (
    DualNetMP,
    UeThreeOutputEncoder,
    csi_features,
)


def as_dualnet_mp(model: nn.Module) -> DualNetMP:
    if not isinstance(model, DualNetMP):
        raise TypeError(f"not a DualNet-MP model: {type(model).__name__}")
    return model


def ue_encoder(model: nn.Module) -> nn.Module:
    """The handset graph in eval mode: CSI (N, 2, 32, 32) in [0, 1] -> three integer outputs
    (magnitude levels int8 (N, M_MAG), phase levels int8 (N, M_PHA), sign bits uint8 (N, K_S)).
    """
    return UeThreeOutputEncoder(as_dualnet_mp(model).encoder).eval()


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
    config = as_dualnet_mp(model).config
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
    m = as_dualnet_mp(model)
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
    m = as_dualnet_mp(model)

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
    m = as_dualnet_mp(model)
    x = torch.as_tensor(np.asarray(dl, dtype=np.float32))
    check_input(x, InputSpec(), "dl")
    mean_mag = csi_features(x).magnitude.mean(dim=(0, 1)).flatten()
    positions = torch.topk(mean_mag, m.config.sign_length).indices
    m.set_sign_positions(positions)
    return m.encoder.sign_positions.clone()


def fit_magnitude_gain(model: nn.Module, dl: torch.Tensor | np.ndarray) -> float:
    """Set g = 1 / RMS(sqrt(2) |H|) over `dl` on both ends, so the magnitudes the networks see
    have unit RMS; returns g. All-zero CSI (every entry 0.5) has no scale and is an error."""
    m = as_dualnet_mp(model)
    x = torch.as_tensor(np.asarray(dl, dtype=np.float32))
    check_input(x, InputSpec(), "dl")
    rms = float(csi_features(x).magnitude.double().pow(2).mean().sqrt())
    if not rms > 0:
        raise ValueError(
            "dl: every CSI entry is zero (0.5 in the [0, 1] layout); no magnitude scale"
        )
    m.set_magnitude_gain(1.0 / rms)
    return float(m.encoder.magnitude_gain)
