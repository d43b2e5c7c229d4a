"""Numerics gates: every converted artifact is run on held-out CSI and held to the float model.

For an encoder artifact the gate records the max-abs error of its codeword against the torch
encoder and the end-to-end NMSE of (artifact encoder + float torch decoder); for a decoder
artifact, the max-abs error of its reconstruction against the torch decoder fed the float
codewords. Both also carry the float model's NMSE on the same samples and the difference
(Delta NMSE, dB, positive = worse).

Two gates: a float conversion (torch -> ONNX fp32) must stay within the model's
`onnx_tolerance` on its output (`ToleranceError` otherwise); a quantized artifact must not
lose more than `max_nmse_drop` dB of NMSE (`NmseGateError`, a `ToleranceError` carrying the
per-layer SQNR table that names the worst layers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.errors import ToleranceError
from csideploy.quantize.diagnostics import LayerError

NMSE_CONVENTION = "linear"
TORCH_BATCH = 500


@dataclass(frozen=True)
class NmseConvention:
    """Which NMSE the numbers are (see `csideploy.metrics.NMSE_CONVENTIONS`)."""

    name: str
    description: str

    @classmethod
    def named(cls, name: str = NMSE_CONVENTION) -> NmseConvention:
        from csideploy.metrics import NMSE_CONVENTIONS

        if name not in NMSE_CONVENTIONS:
            known = ", ".join(NMSE_CONVENTIONS)
            raise ValueError(f"unknown NMSE convention {name!r}; known: {known}")
        return cls(name=name, description=str(NMSE_CONVENTIONS[name]))


@dataclass(frozen=True)
class FloatReference:
    """The float torch model on the evaluation set: what every artifact is held to.

    `codewords` come from the float encoder and feed every decoder; `exported_codewords` from
    the module that was actually exported (after BN folding and linearization, or the
    integer handset graph), which is what an encoder file's parity is measured against.
    `side`: the decoder's extra input (DualNet-MP's uplink CSI), or None.
    """

    csi: np.ndarray
    codewords: np.ndarray
    reconstruction: np.ndarray
    nmse_db: float
    convention: NmseConvention
    exported_codewords: np.ndarray | None = None
    side: np.ndarray | None = None
    integer_codeword: bool = False
    """The codeword is integer levels: parity is counted in levels that differ."""

    @property
    def parity_codewords(self) -> np.ndarray:
        return self.codewords if self.exported_codewords is None else self.exported_codewords

    @property
    def samples(self) -> int:
        return len(self.csi)


@dataclass(frozen=True)
class Numerics:
    """One artifact against the float model, on the evaluation set."""

    compared_output: str
    """The tensor whose max-abs error is recorded (`codeword` or `csi_hat`)."""
    max_abs_error: float
    nmse_db: float
    float_nmse_db: float
    delta_nmse_db: float
    """nmse_db - float_nmse_db: the NMSE lost, in dB (positive = worse)."""
    samples: int
    level_mismatch: float | None = None
    """Integer codewords only: the fraction of codeword entries whose level differs."""
    codeword_sqnr_db: float | None = None
    """Encoders: SQNR (dB) of the codeword against the float encoder's."""
    fidelity_nmse_db: float | None = None
    """Encoders: NMSE (dB) of the reconstruction against the float model's reconstruction."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GateResult:
    """The verdict of one gate: what was measured, the limit, and whether it passed."""

    name: str
    measured: float
    limit: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": _json_number(self.measured),
            "limit": _json_number(self.limit),
            "passed": self.passed,
        }


class NmseGateError(ToleranceError):
    """A quantized artifact lost more NMSE than allowed; carries the per-layer SQNR table."""

    def __init__(
        self, message: str, *, numerics: Numerics, limit: float, layers: Sequence[LayerError]
    ) -> None:
        super().__init__(message)
        self.numerics = numerics
        self.limit = limit
        self.layers = tuple(layers)

    def table(self, rows: int | None = 15) -> str:
        return format_layer_table(self.layers, rows=rows)


@torch.no_grad()
def run_torch(
    module: nn.Module,
    x: np.ndarray,
    side: np.ndarray | None = None,
    *,
    batch_size: int = TORCH_BATCH,
) -> np.ndarray:
    """`module` in eval mode on every row of `x` (and of `side`, a second input, if given),
    batch by batch, as float32 numpy."""
    module.eval()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    extra = None if side is None else torch.from_numpy(np.ascontiguousarray(side, np.float32))
    parts = [
        module(t[i : i + batch_size])
        if extra is None
        else module(t[i : i + batch_size], extra[i : i + batch_size])
        for i in range(0, len(t), batch_size)
    ]
    return torch.cat(parts).numpy().astype(np.float32, copy=False)


@torch.no_grad()
def run_torch_outputs(
    module: nn.Module, x: np.ndarray, *, batch_size: int = TORCH_BATCH
) -> list[np.ndarray]:
    """Every output of `module` (one tensor or a tuple) on every row of `x`, dtypes kept."""
    module.eval()
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    chunks = []
    for i in range(0, len(t), batch_size):
        out = module(t[i : i + batch_size])
        chunks.append(out if isinstance(out, tuple | list) else (out,))
    return [torch.cat([c[k] for c in chunks]).numpy() for k in range(len(chunks[0]))]


def nmse_db(x: np.ndarray, x_hat: np.ndarray, convention: NmseConvention) -> float:
    from csideploy.metrics import nmse

    return float(nmse(x, x_hat, convention=convention.name))


def float_reference(
    encoder: nn.Module,
    decoder: nn.Module,
    csi: np.ndarray,
    *,
    convention: str = NMSE_CONVENTION,
    exported_encoder: nn.Module | None = None,
    side: np.ndarray | None = None,
    integer_codeword: bool = False,
) -> FloatReference:
    """Run the float torch encoder and decoder (and the exported encoder) on the evaluation
    CSI; `side` is the decoder's second input, row for row."""
    from csideploy.models.ue_graph import flat_codeword

    named = NmseConvention.named(convention)
    codewords = run_torch(encoder, csi)
    reconstruction = run_torch(decoder, codewords, side)
    exported = None
    if exported_encoder is not None:
        exported = flat_codeword(run_torch_outputs(exported_encoder, csi))
        _check_same_shape("exported codeword", codewords, exported)
    return FloatReference(
        csi=csi,
        codewords=codewords,
        reconstruction=reconstruction,
        nmse_db=nmse_db(csi, reconstruction, named),
        convention=named,
        exported_codewords=exported,
        side=side,
        integer_codeword=integer_codeword,
    )


def encoder_numerics(
    reference: FloatReference, decoder: nn.Module, codewords: np.ndarray
) -> Numerics:
    """An encoder artifact's codewords (on `reference.csi`) decoded by the float decoder."""
    expected = reference.parity_codewords
    _check_same_shape("codeword", expected, codewords)
    reconstruction = run_torch(decoder, codewords, reference.side)
    from csideploy.metrics import nmse, sqnr_db

    numerics = _numerics("codeword", reference, expected, codewords, reconstruction)
    numerics = replace(
        numerics,
        codeword_sqnr_db=sqnr_db(reference.codewords, codewords),
        fidelity_nmse_db=float(nmse(reference.reconstruction, reconstruction)),
    )
    if reference.integer_codeword:
        mismatch = float(np.mean(expected != codewords)) if expected.size else 0.0
        numerics = replace(numerics, level_mismatch=mismatch)
    return numerics


def decoder_numerics(reference: FloatReference, reconstruction: np.ndarray) -> Numerics:
    """A decoder artifact's reconstruction from the float codewords."""
    _check_same_shape("csi_hat", reference.reconstruction, reconstruction)
    return _numerics("csi_hat", reference, reference.reconstruction, reconstruction, reconstruction)


def _numerics(
    output: str,
    reference: FloatReference,
    expected: np.ndarray,
    actual: np.ndarray,
    reconstruction: np.ndarray,
) -> Numerics:
    error = np.abs(expected.astype(np.float64) - actual.astype(np.float64))
    max_abs = float(error.max()) if error.size else 0.0
    if not np.all(np.isfinite(actual)):
        max_abs = math.inf
    nmse = nmse_db(reference.csi, reconstruction, reference.convention)
    return Numerics(
        compared_output=output,
        max_abs_error=max_abs,
        nmse_db=nmse,
        float_nmse_db=reference.nmse_db,
        delta_nmse_db=nmse - reference.nmse_db,
        samples=reference.samples,
    )


def check_parity(numerics: Numerics, tolerance: float, *, what: str) -> GateResult:
    """Float conversion gate: max-abs error of the output within `tolerance`."""
    gate = GateResult(
        name=f"max-abs {numerics.compared_output} error",
        measured=numerics.max_abs_error,
        limit=tolerance,
        passed=numerics.max_abs_error <= tolerance,
    )
    if not gate.passed:
        raise ToleranceError(
            f"{what}: {numerics.compared_output} differs from the torch model by up to "
            f"{numerics.max_abs_error:.3g} (tolerance {tolerance:.3g}) on "
            f"{numerics.samples} samples"
        )
    return gate


def check_levels(
    numerics: Numerics, max_mismatch: float, *, what: str, max_levels: float = 1.0
) -> GateResult:
    """Float conversion gate for integer codewords: levels may differ only where the float
    value sits on a rounding tie, so at most `max_mismatch` of the entries may differ, and
    by at most `max_levels`."""
    mismatch = numerics.level_mismatch
    if mismatch is None:
        raise ValueError("check_levels needs integer-codeword numerics")
    gate = GateResult(
        name="codeword level mismatch (fraction)",
        measured=mismatch,
        limit=max_mismatch,
        passed=mismatch <= max_mismatch and numerics.max_abs_error <= max_levels,
    )
    if not gate.passed:
        raise ToleranceError(
            f"{what}: {mismatch:.2%} of codeword levels differ from the torch model "
            f"(limit {max_mismatch:.2%}), by up to {numerics.max_abs_error:g} levels "
            f"(limit {max_levels:g}) on {numerics.samples} samples"
        )
    return gate


def check_nmse_drop(
    numerics: Numerics,
    max_drop_db: float,
    *,
    what: str,
    layer_table: Callable[[], Sequence[LayerError]] | None = None,
) -> GateResult:
    """Quantization gate: Delta NMSE at most `max_drop_db` (inf accepts anything).

    On failure `layer_table` is called to name the layers responsible, and `NmseGateError`
    carries it.
    """
    drop = numerics.delta_nmse_db
    passed = math.isinf(max_drop_db) or (math.isfinite(drop) and drop <= max_drop_db)
    gate = GateResult(name="NMSE drop (dB)", measured=drop, limit=max_drop_db, passed=passed)
    if passed:
        return gate
    layers = tuple(layer_table()) if layer_table is not None else ()
    worst = ", ".join(f"{row.node} ({_db(_rank(row))} dB)" for row in layers[:3])
    message = (
        f"{what}: NMSE {numerics.nmse_db:.2f} dB vs float {numerics.float_nmse_db:.2f} dB "
        f"loses {drop:.2f} dB, above --max-nmse-drop {max_drop_db:g} dB"
    )
    if worst:
        message += f"; worst layers by SQNR: {worst}"
    message += "; nothing was written (pass --max-nmse-drop inf to keep the artifacts)"
    raise NmseGateError(message, numerics=numerics, limit=max_drop_db, layers=layers)


def format_layer_table(layers: Sequence[LayerError], *, rows: int | None = 15) -> str:
    """Markdown table of per-tensor SQNR, worst first (the first `rows`, or all)."""
    shown = list(layers if rows is None else layers[:rows])
    lines = [
        "| layer (node) | tensor | local Q/DQ SQNR (dB) | SQNR vs float (dB) |",
        "|---|---|---:|---:|",
    ]
    for row in shown:
        local = "-" if row.local_sqnr_db is None else _db(row.local_sqnr_db)
        lines.append(f"| {row.node} | {row.tensor} | {local} | {_db(row.sqnr_db)} |")
    if rows is not None and len(layers) > rows:
        lines.append(f"| ... {len(layers) - rows} more | | | |")
    return "\n".join(lines)


def _rank(row: LayerError) -> float:
    return row.local_sqnr_db if row.local_sqnr_db is not None else row.sqnr_db


def _db(value: float) -> str:
    return f"{value:.1f}" if math.isfinite(value) else ("inf" if value > 0 else "-inf")


def _json_number(value: float) -> float | str:
    """JSON has no infinity: write it as the string "inf"."""
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _check_same_shape(what: str, expected: np.ndarray, actual: np.ndarray) -> None:
    if expected.shape != actual.shape:
        from csideploy.errors import ShapeError

        raise ShapeError(f"{what}: expected shape {expected.shape}, got {actual.shape}")
