"""Fidelity of an INT8 encoder to the float model, and its gate.

The NMSE gate compares each INT8 file with the ground truth, and is one-sided: a poor model
can "improve" its NMSE when quantization damage happens to move its reconstruction towards
the truth. So every INT8 file is also held to the float model itself:

- codeword SQNR: 10 log10(|c|^2 / |c_int8 - c|^2) over the evaluation set, in dB (higher
  is better), where c is the float encoder's codeword;
- fidelity NMSE: the NMSE of the reconstruction from the INT8 codeword against the float
  model's reconstruction (not against the CSI), in dB (lower is better).

A codeword that moved far fails both, whatever the NMSE against the ground truth does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from csideploy.defaults import DEFAULT_MAX_FIDELITY_NMSE_DB as MAX_FIDELITY_NMSE_DB
from csideploy.defaults import DEFAULT_MIN_CODEWORD_SQNR_DB as MIN_CODEWORD_SQNR_DB
from csideploy.gates.numerics import GateResult, NmseGateError, Numerics
from csideploy.quantize.diagnostics import LayerError


@dataclass(frozen=True)
class FidelityLimits:
    """The two limits of the fidelity gate."""

    min_codeword_sqnr_db: float = MIN_CODEWORD_SQNR_DB
    max_fidelity_nmse_db: float = MAX_FIDELITY_NMSE_DB


def fidelity_failures(sqnr_db: float, fidelity_db: float, limits: FidelityLimits) -> list[str]:
    """What breaks the gate, in words (empty when it passes)."""
    problems = []
    if not sqnr_db >= limits.min_codeword_sqnr_db:
        problems.append(f"codeword SQNR {sqnr_db:.1f} dB below {limits.min_codeword_sqnr_db:g} dB")
    if not fidelity_db <= limits.max_fidelity_nmse_db:
        problems.append(
            f"reconstruction NMSE against the float model {fidelity_db:.1f} dB above "
            f"{limits.max_fidelity_nmse_db:g} dB"
        )
    return problems


class FidelityGateError(NmseGateError):
    """An INT8 file whose codeword or reconstruction moved too far from the float model's."""


def check_fidelity(
    numerics: Numerics,
    limits: FidelityLimits,
    *,
    what: str,
    layer_table: Callable[[], Sequence[LayerError]] | None = None,
) -> GateResult:
    """The second side of the INT8 gate: fidelity to the float model (see
    `csideploy.gates.fidelity`), whatever the NMSE against the ground truth did."""
    if numerics.level_mismatch is not None:
        # Integer codewords: a one-level tie on a near-silent level swings the SQNR; those
        # files keep their level-count gate (`check_levels`) and the NMSE gate.
        return GateResult(
            name="codeword SQNR (dB) vs float (integer codeword: recorded, not gated)",
            measured=numerics.codeword_sqnr_db or 0.0,
            limit=limits.min_codeword_sqnr_db,
            passed=True,
        )
    sqnr = numerics.codeword_sqnr_db
    fidelity = numerics.fidelity_nmse_db
    if sqnr is None or fidelity is None:
        raise ValueError("check_fidelity needs encoder numerics")
    problems = fidelity_failures(sqnr, fidelity, limits)
    gate = GateResult(
        name="codeword SQNR (dB) vs float",
        measured=sqnr,
        limit=limits.min_codeword_sqnr_db,
        passed=not problems,
    )
    if not problems:
        return gate
    layers = tuple(layer_table()) if layer_table is not None else ()
    message = (
        f"{what}: moved away from the float model: {'; '.join(problems)} "
        f"(NMSE {numerics.nmse_db:.2f} dB vs float {numerics.float_nmse_db:.2f} dB); "
        "nothing was written (--min-codeword-sqnr / --max-fidelity-nmse set the limits)"
    )
    raise FidelityGateError(message, numerics=numerics, limit=gate.limit, layers=layers)
