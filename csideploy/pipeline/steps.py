"""The export steps before any file is written: load, data, surgery, split, reference.

Each step takes the config (and what earlier steps returned) and returns a typed result from
`csideploy.pipeline.results`; `csideploy.pipeline.run.run_export` runs them in order.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from csideploy.defaults import MIN_CALIB_SAMPLES, MIN_EVAL_SAMPLES
from csideploy.errors import CsiDeployError, DataError, ToleranceError
from csideploy.gates.numerics import NMSE_CONVENTION, FloatReference, GateResult, float_reference
from csideploy.models.ue_graph import SideInput
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.format_steps import LEVEL_MISMATCH_LIMIT
from csideploy.pipeline.results import CheckpointSummary, CsiSet, ModelSizes, SplitModel
from csideploy.quantize.base import get_method
from csideploy.quantize.calibration_data import check_calibration_set, mismatch_warning


def load_step(config: ExportConfig) -> tuple[Any, CheckpointSummary]:
    """Load the model: the given checkpoint, or the shipped default for (model, CR)."""
    from csideploy.models.checkpoint import load_model
    from csideploy.models.registry import get_entry

    get_entry(config.model)
    loaded = load_model(config.model, cr=config.cr, checkpoint=config.checkpoint)
    label = Path(config.checkpoint).name if config.checkpoint else _default_label(loaded)
    return loaded, CheckpointSummary(
        label=label, sha256=loaded.sha256, source_format=str(loaded.source_format)
    )


def _default_label(loaded: Any) -> str:
    metadata = getattr(loaded, "metadata", None) or {}
    path = metadata.get("path") if isinstance(metadata, Mapping) else None
    return f"shipped default {Path(path).name}" if path else "shipped default"


def split_step(model: nn.Module) -> SplitModel:
    """UE encoder and BS decoder as separate float modules, plus export-ready copies.

    The export copy of a float-codeword encoder has its BatchNorms folded into the
    convolutions and its kernel-1 Conv1d layers turned into Linear; an integer-codeword model
    exports its handset graph (`UeGraph`) instead.
    """
    import torch

    from csideploy.models.registry import get_entry
    from csideploy.models.stats import count_macs, count_params
    from csideploy.transforms import fold_batchnorm_report, linearize_pointwise_convs

    encoder, decoder = model.encoder.eval(), model.decoder.eval()
    entry = get_entry(model.model_name)
    input_shape = tuple(entry.input_spec.shape)
    with torch.no_grad():
        codeword = encoder(torch.zeros(1, *input_shape))
    if codeword.dim() != 2:
        raise CsiDeployError(
            f"{model.model_name}: the encoder must return a flat (N, M) codeword, "
            f"got shape {tuple(codeword.shape)}"
        )
    graph = entry.ue_graph(model) if entry.ue_graph is not None else None
    folded: tuple[str, ...] = ()
    not_folded: tuple[str, ...] = ()
    if graph is not None:
        export_encoder, enc_replaced = graph.module.eval(), ()
    else:
        fold = fold_batchnorm_report(encoder)
        folded = tuple(f"encoder.{p.conv} <- encoder.{p.bn}" for p in fold.folded)
        not_folded = tuple(f"encoder.{n.path}: {n.reason}" for n in fold.not_folded) + tuple(
            f"encoder.{path}: per-delay affine, kept as a multiply-add" for path in fold.converted
        )
        enc = linearize_pointwise_convs(fold.module)
        export_encoder, enc_replaced = enc.module.eval(), enc.replaced
    dec = linearize_pointwise_convs(decoder)
    side = entry.side_input
    decoder_example = [torch.zeros_like(codeword)]
    if side is not None:
        decoder_example.append(torch.zeros(1, *side.shape))
    sizes = ModelSizes(
        params_encoder=count_params(encoder),
        params_decoder=count_params(decoder),
        macs_encoder=count_macs(encoder, torch.zeros(1, *input_shape)),
        macs_decoder=count_macs(decoder, *decoder_example),
    )
    return SplitModel(
        encoder=encoder,
        decoder=decoder,
        export_encoder=export_encoder,
        export_decoder=dec.module.eval(),
        linearized=tuple(f"encoder.{n}" for n in enc_replaced)
        + tuple(f"decoder.{n}" for n in dec.replaced),
        sizes=sizes,
        input_shape=input_shape,
        codeword_length=int(codeword.shape[1]),
        folded=folded,
        not_folded=not_folded,
        ue_graph=graph,
        side_input=side,
    )


def surgery_step(
    config: ExportConfig, model: nn.Module, evaluation: CsiSet
) -> tuple[nn.Module, dict[str, Any]]:
    """Hard-sigmoid substitution (and its optional fine-tune), with the NMSE before and after."""
    if config.hard_sigmoid is None:
        return model, {}
    from csideploy.calibration.synthetic import generate
    from csideploy.transforms import hard_sigmoid_study

    train_x = None
    if config.finetune_epochs:
        train_x = generate(config.finetune_samples, scenario="indoor", seed=FINETUNE_SEED)
    study = hard_sigmoid_study(
        model,
        evaluation.data,
        train_x=train_x,
        finetune_epochs=config.finetune_epochs,
        scope=config.hard_sigmoid,
        convention=config.convention,
    )
    summary = {
        "hard_sigmoid": {
            "scope": study.scope,
            "replaced": list(study.replaced),
            "nothing_to_replace": study.nothing_to_replace,
            "nmse_convention": study.convention,
            "eval_samples": study.n_eval,
            "nmse_before_db": study.nmse_before_db,
            "nmse_after_db": study.nmse_after_db,
            "nmse_finetuned_db": study.nmse_finetuned_db,
            "finetune_epochs": study.finetune_epochs,
            "finetune_samples": study.finetune_samples,
            "finetune_data": f"synthetic indoor (seed {FINETUNE_SEED})"
            if train_x is not None
            else None,
        }
    }
    return (study.model if study.model is not None else model), summary


FINETUNE_SEED = 3003
"""Seed of the synthetic training set for `--finetune-epochs` (disjoint from calib / eval)."""


def calibration_step(config: ExportConfig, evaluation: CsiSet | None = None) -> CsiSet | None:
    """The calibration set (static INT8 only): `--calib`, else the samples of the `--eval` file
    after the evaluation ones (same source, disjoint), else synthetic indoor CSI. A degenerate
    set is refused; one whose spread differs strongly from `evaluation` warns
    (`CalibrationWarning`, also recorded in the set)."""
    if config.int8 is None or not get_method(config.int8).needs_calibration:
        return None
    if config.calib is None and config.eval_data is not None:
        csi = _calibration_after_evaluation(config)
    else:
        csi = _csi_set(
            "calibration", config.calib, config.calib_samples, MIN_CALIB_SAMPLES, "--calib-samples"
        )
    check_calibration_set(csi.data, csi.source)
    warning = None
    if evaluation is not None:
        warning = mismatch_warning(csi.data, csi.source, evaluation.data, evaluation.source)
        if warning:
            warnings.warn(warning, CalibrationWarning, stacklevel=2)
    return replace(csi, method=config.calib_method, warning=warning)


def _calibration_after_evaluation(config: ExportConfig) -> CsiSet:
    """Calibration samples from the `--eval` file, after the first `--eval-samples`."""
    from csideploy.calibration.io import load_csi

    assert config.eval_data is not None
    data = load_csi(config.eval_data)
    rest = data[config.eval_samples : config.eval_samples + config.calib_samples]
    if len(rest) < MIN_CALIB_SAMPLES:
        raise DataError(
            f"--eval file {config.eval_data} holds {len(data)} samples: after the "
            f"{config.eval_samples} evaluation samples {len(rest)} remain for calibration, "
            f"fewer than {MIN_CALIB_SAMPLES}; pass --calib or lower --eval-samples"
        )
    first = config.eval_samples
    source = (
        f"{config.eval_data} (samples {first}-{first + len(rest) - 1}, after the evaluation set)"
    )
    return CsiSet(role="calibration", source=source, samples=len(rest), data=rest)


class CalibrationWarning(UserWarning):
    """The calibration set looks unlike the evaluation set."""


def evaluation_step(config: ExportConfig, side_input: SideInput | None = None) -> CsiSet:
    """The evaluation set for every gate: `--eval` file or synthetic indoor CSI.

    A model whose decoder takes the uplink CSI (`side_input`) is evaluated on paired data: a
    `--eval` file holding `HT` and `HT_UL`, or the built-in paired generator.
    """
    if side_input is not None:
        return _paired_set(config.eval_data, config.eval_samples)
    return _csi_set(
        "evaluation", config.eval_data, config.eval_samples, MIN_EVAL_SAMPLES, "--eval-samples"
    )


def _paired_set(path: str | None, samples: int) -> CsiSet:
    from csideploy.calibration import paired, synthetic

    if path is None:
        seed = synthetic.EVALUATION_SEED
        dl, ul = paired.generate_paired(samples, scenario="indoor", seed=seed)
        source = f"synthetic indoor, paired UL/DL (seed {seed})"
        return CsiSet("evaluation", source, len(dl), dl, seed=seed, side=ul)
    try:
        dl, ul = paired.load_paired(path, limit=samples)
    except DataError as error:
        raise DataError(
            f"this model's decoder takes the uplink CSI, so --eval must be a paired file "
            f"(variables {paired.DL_VARIABLE} and {paired.UL_VARIABLE}; make one with "
            f"`csideploy data synth --paired`): {error}"
        ) from None
    if len(dl) < samples:
        raise DataError(
            f"evaluation file {path} holds {len(dl)} pairs, fewer than {samples} requested "
            "(--eval-samples)"
        )
    return CsiSet("evaluation", str(path), len(dl), dl, side=ul)


def _csi_set(role: str, path: str | None, samples: int, minimum: int, option: str) -> CsiSet:
    if path is None:
        from csideploy.calibration import synthetic

        if role == "calibration":
            seed, data = synthetic.CALIBRATION_SEED, synthetic.default_calibration(samples)
        else:
            seed, data = synthetic.EVALUATION_SEED, synthetic.default_evaluation(samples)
        return CsiSet(
            role=role,
            source=f"synthetic indoor (seed {seed})",
            samples=len(data),
            data=data,
            seed=seed,
        )
    from csideploy.calibration.io import load_csi

    data = load_csi(path, limit=samples)
    if len(data) < samples:
        needed = f"{samples} requested ({option})"
        if len(data) < minimum:
            needed += f"; at least {minimum} are needed"
        raise DataError(f"{role} file {path} holds {len(data)} samples, fewer than {needed}")
    return CsiSet(role=role, source=str(path), samples=len(data), data=data)


def reference_step(
    split: SplitModel, evaluation: CsiSet, convention: str = NMSE_CONVENTION
) -> FloatReference:
    """The float torch model's codewords, reconstruction and NMSE on the evaluation set, and
    the exported encoder module's codewords (what the files are held to)."""
    return float_reference(
        split.encoder,
        split.decoder,
        evaluation.data,
        convention=convention,
        exported_encoder=split.export_encoder,
        side=evaluation.side,
        integer_codeword=bool(split.ue_graph and split.ue_graph.integer),
    )


EXPORT_MODULE_RELATIVE_TOLERANCE = 1e-5
"""Folding and linearization only reorder float arithmetic: the export module's codeword may
differ from the float encoder's by at most this share of the largest |codeword|."""


def export_module_step(split: SplitModel, reference: FloatReference) -> dict[str, Any]:
    """Parity of the module that is exported against the float encoder, in torch.

    A float codeword: max-abs error relative to the largest |codeword| (BN folding and
    Conv1d -> Linear); integer levels: the share of levels that differ.
    """
    expected, actual = reference.codewords, reference.parity_codewords
    error = float(np.max(np.abs(expected.astype(np.float64) - actual))) if expected.size else 0.0
    if reference.integer_codeword:
        mismatch = float(np.mean(expected != actual)) if expected.size else 0.0
        gate = GateResult(
            "export module level mismatch",
            mismatch,
            LEVEL_MISMATCH_LIMIT,
            mismatch <= LEVEL_MISMATCH_LIMIT and error <= 1.0,
        )
    else:
        peak = float(np.max(np.abs(expected))) if expected.size else 0.0
        relative = error / peak if peak > 0 else error
        gate = GateResult(
            "export module relative max-abs error",
            relative,
            EXPORT_MODULE_RELATIVE_TOLERANCE,
            relative <= EXPORT_MODULE_RELATIVE_TOLERANCE,
        )
    if not gate.passed:
        raise ToleranceError(
            f"the export copy of the encoder (BN folded: {len(split.folded)}, linearized: "
            f"{len(split.linearized)}) differs from the float encoder: {gate.name} "
            f"{gate.measured:.3g} > {gate.limit:g}"
        )
    return {
        "export_module": {
            "bn_folded": list(split.folded),
            "bn_not_folded": list(split.not_folded),
            "linearized": list(split.linearized),
            "ue_graph_outputs": list(split.output_names) if split.ue_graph else None,
            "max_abs_error": error,
            "gate": gate.to_dict(),
        }
    }

