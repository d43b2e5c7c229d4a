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

Every decision is recorded with its measurements and reason (`LayerDecision`), for the
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
    """Median time of the layer alone (float / int8 QDQ), one thread, batch 1."""
    sqnr_db: float | None = None
    """Codeword SQNR (dB) vs float with this layer alone in int8, on the calibration set."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LayerPlan:
    """The layers to quantize and every decision."""

    nodes: tuple[str, ...]
    decisions: tuple[LayerDecision, ...]
    score: Score | None
    """The chosen graph on the calibration set (None when nothing is quantized)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "quantized": list(self.nodes),
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


def plan_layers(
    candidates: Sequence[onnx.NodeProto],
    *,
    time_layer: Callable[[onnx.NodeProto], tuple[float, float]] | None,
    build: Callable[[Sequence[str]], Path],
    score: Callable[[Path], Score],
    fits: Callable[[Score], bool],
) -> LayerPlan:
    """Choose the layers (see the module docstring). `time_layer(node)` -> (float, int8) us,
    or None to skip the speed rule; `build(nodes)` writes the graph with those nodes in int8;
    `score` measures a graph on the calibration set; `fits` says whether a score is within
    budget."""
    decisions: dict[str, LayerDecision] = {}
    fast: list[tuple[onnx.NodeProto, float | None, float | None]] = []
    for node in candidates:
        float_us, int8_us = time_layer(node) if time_layer else (None, None)
        if float_us is not None and int8_us is not None and int8_us > SPEED_MARGIN * float_us:
            decisions[node.name] = LayerDecision(
                node.name,
                node.op_type,
                False,
                f"int8 kernel slower than float ({int8_us:.1f} vs {float_us:.1f} us)",
                float_us,
                int8_us,
            )
        else:
            fast.append((node, float_us, int8_us))
    ranked = []
    for node, float_us, int8_us in fast:
        alone = score(build([node.name]))
        ranked.append((alone.codeword_sqnr_db, node, float_us, int8_us))
    ranked.sort(key=lambda row: (-row[0], row[1].name))
    chosen: list[str] = []
    best: Score | None = None
    broken = False
    for sqnr, node, float_us, int8_us in ranked:
        trial = None if broken else score(build([*chosen, node.name]))
        if trial is not None and fits(trial):
            chosen.append(node.name)
            best = trial
            reason = "int8: within the accuracy budget" + (
                "" if float_us is None else f", int8 {int8_us:.1f} vs float {float_us:.1f} us"
            )
        else:
            reason = "float: an earlier layer broke the accuracy budget"
            if trial is not None:
                reason = (
                    "float: with it the calibration set loses "
                    f"{trial.delta_nmse_db:+.3f} dB NMSE (codeword SQNR "
                    f"{trial.codeword_sqnr_db:.1f} dB, fidelity {trial.fidelity_nmse_db:.1f} dB), "
                    "over the accuracy budget"
                )
            broken = True
        decisions[node.name] = LayerDecision(
            node.name, node.op_type, node.name in chosen, reason, float_us, int8_us, sqnr
        )
    order = [node.name for node in candidates]
    return LayerPlan(
        nodes=tuple(n for n in order if n in chosen),
        decisions=tuple(decisions[n] for n in order),
        score=best,
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
