"""The INT8 ONNX encoder of the export recipe (`encoder.int8.onnx` / `encoder.dyn.onnx`).

Static INT8 with `int8_layers="auto"` (the default) quantizes only the layers that measure
faster in int8 and fit the accuracy budget on the calibration set
(`csideploy.quantize.onnx_plan`), returns the codeword in float (no 8-bit grid on the FC
output) and corrects the output layer's bias for the mean codeword error
(`csideploy.quantize.onnx_graph`). `int8_layers="all"` quantizes every layer that is not kept
float on principle (the raw-CSI readers, the codeword levelling), with an int8 codeword, as
before. `int8_layers="accuracy"` chooses as "auto" without the speed rule. Handset graphs
with integer codewords or a decoder side input always take "all".

Every file is held to both sides of the gate: the NMSE loss against the ground truth
(`--max-nmse-drop`) and the fidelity to the float model (`--min-codeword-sqnr`,
`--max-fidelity-nmse`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx

from csideploy.errors import DataError
from csideploy.formats.onnx import OnnxRunner, canonicalize, graph_info
from csideploy.gates.fidelity import FidelityLimits, check_fidelity, fidelity_failures
from csideploy.gates.numerics import check_nmse_drop, encoder_numerics, float_reference
from csideploy.pipeline.onnx_float import _onnx_artifact, encode_onnx
from csideploy.pipeline.results import ArtifactResult, ExportContext
from csideploy.quantize import blockwise_fc, equalize, onnx_graph, onnx_plan
from csideploy.quantize import onnx_qdq as q
from csideploy.quantize.base import get_method
from csideploy.quantize.diagnostics import LayerError
from csideploy.quantize.onnx_qdq import QuantizationParams

SQNR_SAMPLES = 128
"""Evaluation samples run through both graphs for the per-layer SQNR table."""
CALIBRATION_BUDGET_DB = 0.05
"""NMSE loss a layer plan may have on the calibration set (half the 0.1 dB aimed at)."""


def limits(context: ExportContext) -> FidelityLimits:
    return FidelityLimits(context.config.min_codeword_sqnr, context.config.max_fidelity_nmse)


def quantize_encoder_onnx(context: ExportContext, float_encoder: ArtifactResult) -> ArtifactResult:
    """INT8 encoder (static QDQ or dynamic), held to the NMSE and fidelity gates."""
    mode = context.config.int8 or "static"
    method = get_method(mode)
    file, precision = method.file_name(".onnx"), method.precision
    float_path = context.staging / float_encoder.file
    raw = context.scratch / f"quantized.{mode}.onnx"
    if mode == "static":
        quantized = _static(context, float_path, raw)
    else:
        quantized = q.quantize_dynamic_onnx(float_path, raw, workdir=context.scratch)

    model = onnx.load(str(raw))
    canonicalize(
        model,
        graph_name="encoder",
        metadata=context.metadata(
            role="encoder", precision=precision, quantization=_describe(quantized.params)
        ),
    )
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    (context.staging / file).write_bytes(data)
    info = graph_info(model, data)

    codewords = encode_onnx(context.staging / file, context.reference.csi)
    numerics = encoder_numerics(context.reference, context.split.decoder, codewords)
    sqnr_samples = context.reference.csi[:SQNR_SAMPLES]
    table = tuple(
        q.layer_sqnr(
            quantized.preprocessed_path,
            context.staging / file,
            sqnr_samples,
            workdir=context.scratch,
        )
    )
    what = f"{file} (float -> INT8 {mode})"
    gates = (
        check_nmse_drop(
            numerics, context.config.max_nmse_drop, what=what, layer_table=lambda: table
        ),
        check_fidelity(numerics, limits(context), what=what, layer_table=lambda: table),
    )
    return replace(
        _onnx_artifact(context, file, "encoder", precision, info, numerics, gates),
        float_ops=q.float_ops(context.staging / file, workdir=context.scratch),
        quantization=quantized.params,
        layers=table,
    )


def _static(context: ExportContext, float_path: Path, raw: Path) -> q.QuantizedGraph:
    """Static INT8: every layer ("all") or the measured layer plan ("auto")."""
    if context.calibration is None:
        raise DataError("static INT8 needs a calibration set")
    calibration = context.calibration.data
    method = context.config.calib_method
    if not uses_layer_plan(context):
        return q.quantize_static_onnx(
            float_path, raw, calibration, method=method, workdir=context.scratch
        )
    planner, plan = layer_plan(context, float_path)
    quantized = planner.build_graph(plan.precisions, raw)
    kept = tuple(sorted({*quantized.params.excluded_nodes}))
    params = replace(quantized.params, excluded_nodes=kept, layer_plan=plan.to_dict())
    return replace(quantized, params=params)


def uses_layer_plan(context: ExportContext) -> bool:
    """Static INT8 by layer plan: not "all", and a plain float codeword without side input."""
    return (
        context.config.int8 == "static"
        and context.config.int8_layers != "all"
        and context.split.ue_graph is None
        and context.reference.side is None
    )


def layer_plan(
    context: ExportContext, float_path: Path | None = None
) -> tuple[_Planner, onnx_plan.LayerPlan]:
    """The layer plan of this export, made on first use and kept in `context.int8_plan`;
    without `float_path` the float encoder is exported to ONNX in the scratch folder."""
    if context.int8_plan is None:
        if float_path is None:
            float_path = context.scratch / "plan.float.onnx"
            export_float_encoder(context, float_path)
        prepared = q.preprocess(float_path, context.scratch / "encoder.preprocessed.onnx")
        planner = _Planner(context, prepared)
        context.int8_plan = (planner, planner.plan())
    return context.int8_plan


def export_float_encoder(context: ExportContext, path: Path) -> None:
    """The float encoder to ONNX (for a plan made without the ONNX format)."""
    from csideploy.formats.onnx import ENCODER_IO, export_onnx

    split = context.split
    export_onnx(
        split.export_encoder,
        path,
        role="encoder",
        input_name=ENCODER_IO[0],
        output_name=ENCODER_IO[1],
        output_names=split.output_names,
        input_shape=split.input_shape,
        opset=context.config.opset,
    )


class _Planner:
    """Builds and scores candidate graphs on the calibration set for `onnx_plan`."""

    def __init__(self, context: ExportContext, prepared: Path) -> None:
        self.context = context
        self.prepared = prepared
        self.calibration = context.calibration.data if context.calibration else np.empty(0)
        split = context.split
        self.reference = float_reference(
            split.encoder,
            split.decoder,
            self.calibration,
            convention=context.reference.convention.name,
            exported_encoder=split.export_encoder,
        )
        self.float_codewords = OnnxRunner(prepared).run_outputs(self.calibration)[0]
        self.count = 0
        self.equalizations: dict[str, equalize.Equalization] = {}

    def plan(self) -> onnx_plan.LayerPlan:
        graph = onnx.load(str(self.prepared)).graph
        candidates = onnx_plan.learned_layers(graph, q.float_nodes(graph))
        inputs = [node.input[0] for node in candidates]
        values = onnx_graph.intermediate_values(self.prepared, inputs, self.calibration[:64])
        timed = self.context.config.int8_layers == "auto"
        model = onnx.load(str(self.prepared))
        return onnx_plan.plan_layers(
            candidates,
            time_layer=None
            if not timed
            else lambda node, form: onnx_plan.time_layer_alone(
                self.prepared,
                node,
                values[node.input[0]],
                self._quantize_one if form == "static" else _blockwise_one,
                self.context.scratch,
            ),
            build=self._build,
            score=self._score,
            fits=self.fits,
            forms=lambda node: (
                ("static", blockwise_fc.PRECISION)
                if blockwise_fc.supports(model, node)
                else ("static",)
            ),
        )

    def _quantize_one(self, float_path: Path, out: Path, data: np.ndarray, node: str) -> None:
        """`node` cut out alone, in static int8; with a float result when it is the output
        layer (as it will be in the written graph)."""
        q.quantize_static_onnx(
            float_path,
            out,
            data,
            method=self.context.config.calib_method,
            workdir=self.context.scratch,
            nodes=[node],
            preprocessed=True,
            float_input=False,
        )
        last = onnx_graph.output_layer(onnx.load(str(self.prepared)))
        if last is not None and last.name == node:
            model = onnx.load(str(out))
            onnx_graph.float_output(model)
            onnx.save(model, str(out))

    def build_graph(self, choice: Mapping[str, str], out: Path) -> q.QuantizedGraph:
        """The graph with the layers of `choice` in their int8 form: static ones with FC
        inputs equalised where that measures better, float codeword and the output bias
        corrected; dynamic ones as blockwise int8 FC layers."""
        nodes = [n for n, form in choice.items() if form == "static"]
        dynamic = [n for n, form in choice.items() if form == blockwise_fc.PRECISION]
        source = self._equalized(nodes, out.with_suffix(".equalized.onnx"))
        quantized = q.quantize_static_onnx(
            source,
            out,
            self.calibration,
            method=self.context.config.calib_method,
            workdir=self.context.scratch,
            nodes=list(nodes),
            preprocessed=True,
        )
        model = blockwise_fc.to_blockwise(onnx.load(str(out)), dynamic)
        floated = onnx_graph.float_output(model)
        shift = None
        if nodes:
            shift = onnx_graph.correct_output_bias(model, self._encode, self.float_codewords)
        onnx.save(model, str(out))
        params = quantized.params
        if floated:
            params = replace(params, output=None)
        chosen = {n: self.equalizations[n] for n in nodes if n in self.equalizations}
        weights = (*params.quantized_weights, *blockwise_fc.blockwise_weights(model))
        params = replace(
            params,
            quantized_weights=tuple(sorted(weights)),
            bias_correction=shift is not None,
            equalized={n: e.alpha for n, e in chosen.items() if e.alpha is not None},
        )
        return replace(quantized, params=params, preprocessed_path=self.prepared)

    def _equalized(self, nodes: Sequence[str], out: Path) -> Path:
        """The float graph with the input of every FC layer in `nodes` equalised."""
        model = onnx.load(str(self.prepared))
        changed = False
        for node in list(model.graph.node):
            if node.name not in nodes:
                continue
            weight = equalize.gemm_weight(model, node)
            if weight is None:
                continue
            if node.name not in self.equalizations:
                values = onnx_graph.intermediate_values(
                    self.prepared, [node.input[0]], self.calibration
                )[node.input[0]]
                self.equalizations[node.name] = equalize.choose_scales(values, weight)
            choice = self.equalizations[node.name]
            if choice.alpha is not None:
                equalize.equalize_onnx(model, node, choice.scales)
                changed = True
        if not changed:
            return self.prepared
        onnx.save(model, str(out))
        return out

    def _build(self, choice: Mapping[str, str]) -> Path:
        self.count += 1
        out = self.context.scratch / f"plan.{self.count}.onnx"
        self.build_graph(choice, out)
        return out

    def _encode(self, model: onnx.ModelProto) -> np.ndarray:
        path = self.context.scratch / "bias-correction.onnx"
        onnx.save(model, str(path))
        return OnnxRunner(path).run_outputs(self.calibration)[0]

    def _score(self, path: Path) -> onnx_plan.Score:
        return self.score_codewords(OnnxRunner(path).run_outputs(self.calibration)[0])

    def score_codewords(self, codewords: np.ndarray) -> onnx_plan.Score:
        """An encoder's codewords on the calibration set, scored against float."""
        numerics = encoder_numerics(self.reference, self.context.split.decoder, codewords)
        return onnx_plan.Score(
            delta_nmse_db=numerics.delta_nmse_db,
            codeword_sqnr_db=float(numerics.codeword_sqnr_db or 0.0),
            fidelity_nmse_db=float(numerics.fidelity_nmse_db or 0.0),
        )

    def fits(self, score: onnx_plan.Score) -> bool:
        budget = min(CALIBRATION_BUDGET_DB, self.context.config.max_nmse_drop)
        problems = fidelity_failures(
            score.codeword_sqnr_db, score.fidelity_nmse_db, limits(self.context)
        )
        return score.delta_nmse_db <= budget and not problems


def _blockwise_one(float_path: Path, out: Path, data: np.ndarray, node: str) -> None:
    """`node` cut out alone, as a blockwise int8 FC layer (for the speed rule)."""
    onnx.save(blockwise_fc.to_blockwise(onnx.load(str(float_path)), [node]), str(out))


def _describe(params: QuantizationParams) -> str:
    if params.mode == "dynamic":
        ops = ", ".join(params.op_types_to_quantize or ())
        return f"dynamic: {params.weight_type} weights of {ops}, activations quantized at run time"
    described = (
        f"static {params.quant_format}: {params.weight_type} weights per channel, "
        f"{params.activation_type} activations, {params.calibration_method} calibration on "
        f"{params.calibration_samples} samples"
    )
    if params.layer_plan is not None:
        described += f", {len(params.layer_plan['quantized'])} layer(s) in int8 by measurement"
    return described


__all__ = ["SQNR_SAMPLES", "LayerError", "quantize_encoder_onnx"]
