"""`--qat-epochs N`: the TFLite INT8 encoder's FC layers fine-tuned with fake quantization.

The layer plan scores each layer by post-training quantization; the trained default's FC
layer only fits there in ONNX Runtime's blockwise dynamic form, which LiteRT lacks, so the
TFLite INT8 file would stay float. With `--qat-epochs`, every FC layer of the plan (static
or dynamic form) is annotated static int8 for TFLite and fine-tuned
(`csideploy.quantize.qat`); the converted graph is scored again on the calibration set with
the plan's own rule (layer budget and fidelity limits), and kept only when it fits. The
evaluation gates then judge the written file as any other.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from csideploy.console import progress_line
from csideploy.formats.tflite import Converter
from csideploy.pipeline.results import ExportContext
from csideploy.quantize.qat import QatReport, QatSettings, qat_converter
from csideploy.quantize.torch_plan import planned_encoder


def qat_setup(
    context: ExportContext, planner: Any, plan: Any
) -> tuple[nn.Module, tuple[str, ...], Converter, QatReport]:
    """(encoder, layers to fine-tune, converter, report) for the TFLite INT8 file: every FC
    layer of the plan, equalised as the plan's static form would be."""
    encoder = context.split.export_encoder
    tuned, layers = planned_encoder(encoder, tuple(plan.precisions), planner.equalizations)
    data, source = training_data(context)

    def accept(encode: Any) -> tuple[dict[str, Any], bool]:
        score = planner.score_codewords(encode(planner.calibration))
        return {
            "delta_nmse_db": round(score.delta_nmse_db, 4),
            "codeword_sqnr_db": round(score.codeword_sqnr_db, 2),
            "fidelity_nmse_db": round(score.fidelity_nmse_db, 2),
        }, planner.fits(score)

    settings = QatSettings(
        epochs=context.config.qat_epochs,
        data=data,
        decoder=context.split.decoder,
        source=source,
        accept=accept,
        lr=context.config.qat_lr,
        progress=progress_line,
    )
    report = QatReport()
    return tuned, layers, qat_converter(settings, report), report


def training_data(context: ExportContext) -> tuple[np.ndarray, str]:
    """`--qat-data`, else the calibration source: synthetic indoor CSI from the training seed
    (disjoint from calibration and evaluation), or the calibration file's samples."""
    config = context.config
    if config.qat_data is not None:
        from csideploy.calibration.io import load_csi

        return load_csi(config.qat_data, limit=config.qat_samples), str(config.qat_data)
    calibration = context.calibration
    if calibration is not None and calibration.seed is None:
        return calibration.data, calibration.source
    from csideploy.calibration.synthetic import generate
    from csideploy.pipeline.steps import FINETUNE_SEED

    data = generate(config.qat_samples, scenario="indoor", seed=FINETUNE_SEED)
    return data, f"synthetic indoor (seed {FINETUNE_SEED})"
