"""The registry of format steps: what the export loop runs for each `--format`.

A format step is registered with `register_step(name, encoder=..., decoder=..., latency=...)`:
`encoder(context, precision, written)` writes one encoder file of `precision` ("fp32", then
each INT8 precision; `written` holds what the format wrote before, fp32 first) and returns its
`ArtifactResult`; the optional `decoder(context)` writes the BS decoder; the optional
`latency(path, input_shape, runs)` measures one file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from csideploy.gates.fidelity import FidelityLimits, check_fidelity
from csideploy.gates.numerics import (
    GateResult,
    Numerics,
    check_levels,
    check_nmse_drop,
    check_parity,
)
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.results import ArtifactResult, ExportContext
from csideploy.runner import LatencyResult

LEVEL_MISMATCH_LIMIT = 1e-3
"""Integer codewords: share of levels allowed to differ from torch (rounding ties only)."""

EncoderStep = Callable[[ExportContext, str, Sequence[ArtifactResult]], ArtifactResult]
DecoderStep = Callable[[ExportContext], ArtifactResult]
LatencyStep = Callable[[Path, Sequence[int], int], LatencyResult]


@dataclass(frozen=True)
class FormatStep:
    """A registered format: its encoder writer, optional decoder writer and latency."""

    name: str
    encoder: EncoderStep
    decoder: DecoderStep | None = None
    latency: LatencyStep | None = None


FORMAT_STEPS: dict[str, FormatStep] = {}


def register_step(
    name: str,
    *,
    encoder: EncoderStep,
    decoder: DecoderStep | None = None,
    latency: LatencyStep | None = None,
) -> FormatStep:
    """Register format `name`; the export loop calls `encoder` once per precision."""
    step = FormatStep(name=name, encoder=encoder, decoder=decoder, latency=latency)
    FORMAT_STEPS[name] = step
    return step


def encoder_precisions(config: ExportConfig) -> list[str]:
    """The encoder precisions a format step writes: fp32, plus int8 (static) or dynamic."""
    return ["fp32", *([config.int8_precision] if config.int8_precision else [])]


def float_gate(context: ExportContext, numerics: Numerics, *, what: str) -> GateResult:
    """The gate of a float conversion: max-abs error, or level mismatch for integer codes."""
    if context.reference.integer_codeword and numerics.compared_output == "codeword":
        return check_levels(numerics, LEVEL_MISMATCH_LIMIT, what=what)
    return check_parity(numerics, context.onnx_tolerance, what=what)


def encoder_gates(
    context: ExportContext, file: str, precision: str, numerics: Numerics, *, runtime: str
) -> tuple[GateResult, ...]:
    """The gates of a converted encoder file, any format: fp32 to the codeword max-abs
    tolerance against torch; INT8 to the NMSE loss and to its fidelity to the float model."""
    if precision == "fp32":
        return (float_gate(context, numerics, what=f"{file} (torch -> {runtime})"),)
    what = f"{file} (float -> {runtime} {precision})"
    config = context.config
    limits = FidelityLimits(config.min_codeword_sqnr, config.max_fidelity_nmse)
    return (
        check_nmse_drop(numerics, config.max_nmse_drop, what=what),
        check_fidelity(numerics, limits, what=what),
    )
