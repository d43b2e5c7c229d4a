"""Which layers a static INT8 ONNX encoder quantizes, chosen by measurement.

Quantizing a layer is worth it only when its int8 kernel is faster than its float one and
the accuracy it costs fits the budget. `plan_layers` measures both, per learned layer
(Conv, Gemm, MatMul; the layers that read the raw CSI and the codeword levelling stay float
as before, see `csideploy.quantize.onnx_qdq.float_nodes`):

1. Speed: the layer alone, cut out of the float graph, run float and as int8 QDQ (with the
   Quantize / Dequantize at its borders that a float neighbour costs), interleaved, one
   thread, batch 1. A layer whose int8 version is more than 10 % slower stays float.
   ONNX Runtime's QLinearConv on the 2-channel 32x32 convolutions of CsiNet-style encoders
   is slower than its float convolution; a large FC layer is faster in int8.
2. Sensitivity: each fast layer quantized alone; the codeword SQNR against the float graph on
   the calibration set ranks them.
3. Mixed precision: layers are added in order of that SQNR, best first, while the graph
   built from them stays within the budget on the calibration set (NMSE loss against the
   CSI, codeword SQNR and reconstruction fidelity against the float model); the first layer
   that would break it, and every layer after it, stays float.

A layer can have more than one int8 form (`forms`): every layer has "static" (QDQ with
calibrated ranges); a large FC layer also has "dynamic" (int8 weights, int8 activations
quantized per block of inputs at run time, `csideploy.quantize.blockwise_fc`). Each form
goes through the speed rule; of the fast ones, the first that fits the budget alone (static
first: it runs on any ONNX back end and the TFLite file follows it), else the one with the
best codeword SQNR alone, represents the layer in steps 2 and 3.

Every decision is recorded with its measurements, form and reason (`LayerDecision`), for the
manifest and the numerics report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

LEARNED_OPS = ("Conv", "Gemm", "MatMul")
TIMING_RUNS = 300
TIMING_WARMUP = 30
SPEED_MARGIN = 1.1
"""A layer stays float when its int8 time exceeds this multiple of its float time. Timings
within 10 % of each other are noise on a shared CPU: such a layer goes int8 (4x smaller
weights at the same speed), and the choice stays stable from run to run."""


@dataclass(frozen=True)
class Score:
    """One candidate graph on the calibration set."""

    delta_nmse_db: float
    codeword_sqnr_db: float
    fidelity_nmse_db: float


@dataclass(frozen=True)
class LayerDecision:
    """Why one learned layer is int8 or float in the written graph."""

    node: str
    op_type: str
    quantized: bool
    reason: str
    float_us: float | None = None
    int8_us: float | None = None
    """Median time of the layer alone (float / int8 in its chosen form), one thread, batch 1."""
    sqnr_db: float | None = None
    """Codeword SQNR (dB) vs float with this layer alone in int8, on the calibration set."""
    precision: str | None = None
    """The int8 form measured best: "static" (QDQ, calibrated ranges) or "dynamic" (int8
    weights, activations quantized per block at run time); None when no form was fast."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LayerPlan:
    """The layers to quantize, in which form, and every decision."""

    nodes: tuple[str, ...]
    """Layers in static int8 (QDQ)."""
    decisions: tuple[LayerDecision, ...]
    score: Score | None
    """The chosen graph on the calibration set (None when nothing is quantized)."""
    dynamic: tuple[str, ...] = ()
    """FC layers in the "dynamic" form (`csideploy.quantize.blockwise_fc`)."""

    @property
    def precisions(self) -> dict[str, str]:
        """Every int8 layer -> its form."""
        return {**{n: "static" for n in self.nodes}, **{n: "dynamic" for n in self.dynamic}}

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantized": [d.node for d in self.decisions if d.quantized],
            "precision": self.precisions,
            "kept_float": [d.to_dict() for d in self.decisions if not d.quantized],
            "decisions": [d.to_dict() for d in self.decisions],
            "calibration_score": asdict(self.score) if self.score else None,
        }


def learned_layers(graph: onnx.GraphProto, excluded: Sequence[str]) -> list[onnx.NodeProto]:
    """Nodes with a weight (an initializer of rank >= 2) that are not kept float anyway."""
    weights = {t.name for t in graph.initializer if len(t.dims) >= 2}
    skip = set(excluded)
    return [
        node
        for node in graph.node
        if node.op_type in LEARNED_OPS
        and weights.intersection(node.input)
        and node.name not in skip
    ]


Choice = dict[str, str]
"""Node name -> int8 form ("static" or "dynamic")."""


@dataclass(frozen=True)
class _Candidate:
    node: onnx.NodeProto
    precision: str
    float_us: float | None
    int8_us: float | None
    sqnr_db: float


def plan_layers(
    candidates: Sequence[onnx.NodeProto],
    *,
    time_layer: Callable[[onnx.NodeProto, str], tuple[float, float]] | None,
    build: Callable[[Choice], Path],
    score: Callable[[Path], Score],
    fits: Callable[[Score], bool],
    forms: Callable[[onnx.NodeProto], Sequence[str]] = lambda node: ("static",),
) -> LayerPlan:
    """Choose the layers (see the module docstring). `forms(node)` lists the int8 forms a
    layer can take; `time_layer(node, form)` -> (float, int8) us, or None to skip the speed
    rule; `build(choice)` writes the graph with those layers in those forms; `score` measures
    a graph on the calibration set; `fits` says whether a score is within budget. Of a
    layer's fast forms, the first (in `forms` order) that fits the budget alone is taken,
    else the one with the best codeword SQNR alone."""
    decisions: dict[str, LayerDecision] = {}
    ranked: list[_Candidate] = []
    for node in candidates:
        best, slow = _best_form(node, forms(node), time_layer, build, score, fits)
        if best is None:
            decisions[node.name] = slow
        else:
            ranked.append(best)
    ranked.sort(key=lambda c: (-c.sqnr_db, c.node.name))
    chosen: Choice = {}
    best_score: Score | None = None
    broken = False
    for cand in ranked:
        trial = None if broken else score(build({**chosen, cand.node.name: cand.precision}))
        if trial is not None and fits(trial):
            chosen[cand.node.name] = cand.precision
            best_score = trial
        broken = broken or trial is None or not fits(trial)
        decisions[cand.node.name] = LayerDecision(
            cand.node.name,
            cand.node.op_type,
            cand.node.name in chosen,
            _reason(cand, trial, cand.node.name in chosen),
            cand.float_us,
            cand.int8_us,
            cand.sqnr_db,
            cand.precision,
        )
    order = [node.name for node in candidates]
    return LayerPlan(
        nodes=tuple(n for n in order if chosen.get(n) == "static"),
        decisions=tuple(decisions[n] for n in order),
        score=best_score,
        dynamic=tuple(n for n in order if chosen.get(n) == "dynamic"),
    )


def _best_form(
    node: onnx.NodeProto,
    precisions: Sequence[str],
    time_layer: Callable[[onnx.NodeProto, str], tuple[float, float]] | None,
    build: Callable[[Choice], Path],
    score: Callable[[Path], Score],
    fits: Callable[[Score], bool],
) -> tuple[_Candidate | None, LayerDecision]:
    """The first fast form of `node` that fits the budget alone (else the fast one with the
    best SQNR alone), or (None, why it stays float). Static QDQ comes first: it runs on any
    ONNX back end and the TFLite file follows it."""
    best: _Candidate | None = None
    slow: list[str] = []
    last = (None, None)
    for precision in precisions:
        float_us, int8_us = time_layer(node, precision) if time_layer else (None, None)
        if float_us is not None and int8_us is not None and int8_us > SPEED_MARGIN * float_us:
            slow.append(f"{precision} {int8_us:.1f} vs float {float_us:.1f} us")
            last = (float_us, int8_us)
            continue
        alone = score(build({node.name: precision}))
        if best is None or alone.codeword_sqnr_db > best.sqnr_db:
            best = _Candidate(node, precision, float_us, int8_us, alone.codeword_sqnr_db)
        if fits(alone):
            best = _Candidate(node, precision, float_us, int8_us, alone.codeword_sqnr_db)
            break
    reason = "int8 kernel slower than float (" + "; ".join(slow) + ")"
    return best, LayerDecision(node.name, node.op_type, False, reason, *last)


def _reason(cand: _Candidate, trial: Score | None, taken: bool) -> str:
    if taken:
        timing = (
            ""
            if cand.float_us is None
            else (f", int8 {cand.int8_us:.1f} vs float {cand.float_us:.1f} us")
        )
        return f"int8 ({cand.precision}): within the accuracy budget{timing}"
    if trial is None:
        return "float: an earlier layer broke the accuracy budget"
    return (
        f"float: with it ({cand.precision}) the calibration set loses "
        f"{trial.delta_nmse_db:+.3f} dB NMSE (codeword SQNR "
        f"{trial.codeword_sqnr_db:.1f} dB, fidelity {trial.fidelity_nmse_db:.1f} dB), "
        "over the accuracy budget"
    )


def time_layer_alone(
    prepared: str | os.PathLike[str],
    node: onnx.NodeProto,
    activations: np.ndarray,
    quantize: Callable[[Path, Path, np.ndarray, str], None],
    workdir: str | os.PathLike[str],
) -> tuple[float, float]:
    """Median us of `node` cut out of the float graph, float and int8 (`quantize(float_path,
    out_path, calibration, node_name)` makes the int8 one), interleaved runs at batch 1."""
    workdir = Path(workdir)
    tag = f"layer{abs(hash(node.name)) % 10**8}"
    float_path, int8_path = workdir / f"{tag}.float.onnx", workdir / f"{tag}.int8.onnx"
    onnx.utils.extract_model(str(prepared), str(float_path), [node.input[0]], [node.output[0]])
    quantize(float_path, int8_path, activations, node.name)
    return _interleaved([float_path, int8_path], activations[:1])


def _interleaved(paths: Sequence[Path], feed: np.ndarray) -> tuple[float, float]:
    import onnxruntime as ort

    sessions = []
    for path in paths:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        sessions.append(
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        )
    name = sessions[0].get_inputs()[0].name
    times = np.empty((len(sessions), TIMING_RUNS))
    for run in range(TIMING_WARMUP + TIMING_RUNS):
        for k, session in enumerate(sessions):
            start = time.perf_counter_ns()
            session.run(None, {name: feed})
            if run >= TIMING_WARMUP:
                times[k, run - TIMING_WARMUP] = (time.perf_counter_ns() - start) / 1e3
    medians = np.median(times, axis=1)
    return round(float(medians[0]), 2), round(float(medians[1]), 2)
