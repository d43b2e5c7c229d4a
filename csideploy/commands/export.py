"""`csideploy export`: split, export to ONNX, optionally quantize to INT8, gate, write."""

from __future__ import annotations

import warnings

import click

from csideploy.commands._common import echo_json, json_option, latent_option
from csideploy.commands.text import export_summary, warn_float_only_plan, warn_float_planned_files
from csideploy.defaults import (
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_EVAL_SAMPLES,
    DEFAULT_MAX_FIDELITY_NMSE_DB,
    DEFAULT_MAX_NMSE_DROP_DB,
    DEFAULT_MIN_CODEWORD_SQNR_DB,
    DEFAULT_OPSET,
    DEFAULT_QAT_LR,
    DEFAULT_QAT_SAMPLES,
    INT8_LAYER_CHOICES,
    MIN_CALIB_SAMPLES,
)
from csideploy.quantize.base import calibration_methods, method_names


@click.command("export")
@click.option("--model", "model_name", required=True, help="Zoo model name, e.g. clnet.")
@latent_option
@click.option(
    "--cr",
    type=int,
    default=None,
    help="Compression reduction, e.g. 4 for 1/4 [default: the checkpoint's, else 4].",
)
@click.option(
    "--checkpoint",
    default=None,
    type=click.Path(dir_okay=False),
    help="Checkpoint file [default: the shipped one for (model, CR)].",
)
@click.option(
    "--int8",
    type=click.Choice(method_names()),
    is_flag=False,
    flag_value="static",
    default=None,
    help="Also write an INT8 encoder; bare --int8 means static.",
)
@click.option(
    "--calib",
    default=None,
    type=click.Path(dir_okay=False),
    help="Calibration CSI (.mat/.npy/.npz) [default: synthetic indoor].",
)
@click.option(
    "--calib-samples",
    type=int,
    default=DEFAULT_CALIB_SAMPLES,
    show_default=True,
    help=f"Calibration samples (at least {MIN_CALIB_SAMPLES}).",
)
@click.option(
    "--calib-method",
    type=click.Choice(calibration_methods()),
    default="minmax",
    show_default=True,
    help="How static INT8 picks activation ranges.",
)
@click.option(
    "--eval",
    "eval_data",
    default=None,
    type=click.Path(dir_okay=False),
    help="Evaluation CSI for the numerics gates [default: synthetic indoor].",
)
@click.option("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES, show_default=True)
@click.option(
    "--max-nmse-drop",
    type=float,
    default=DEFAULT_MAX_NMSE_DROP_DB,
    show_default=True,
    help="Largest NMSE loss (dB) an INT8 encoder may have; 'inf' accepts any.",
)
@click.option(
    "--min-codeword-sqnr",
    type=float,
    default=DEFAULT_MIN_CODEWORD_SQNR_DB,
    show_default=True,
    help="Fidelity gate: lowest codeword SQNR (dB) of an INT8 encoder against float.",
)
@click.option(
    "--max-fidelity-nmse",
    type=float,
    default=DEFAULT_MAX_FIDELITY_NMSE_DB,
    show_default=True,
    help="Fidelity gate: highest NMSE (dB) of the INT8 reconstruction against the float one.",
)
@click.option(
    "--int8-layers",
    type=click.Choice(INT8_LAYER_CHOICES),
    default="auto",
    show_default=True,
    help="Static INT8 layers: auto (by measured speed and accuracy), accuracy (by accuracy "
    "only) or all.",
)
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(),
    help="Output directory [default: artifacts/<model>-cr<N>].",
)
@click.option(
    "--format",
    "formats",
    default="onnx,tflite",
    show_default=True,
    help="Comma-separated formats: onnx, tflite, pte (tflite and pte need the 'tflite' and"
    " 'executorch' extras).",
)
@click.option(
    "--layout",
    type=click.Choice(["nchw", "nhwc"]),
    default="nchw",
    show_default=True,
    help="TFLite input layout (nhwc: channel-last buffers).",
)
@click.option(
    "--io",
    "tflite_io",
    type=click.Choice(["int8", "float"]),
    default="int8",
    show_default=True,
    help="I/O dtype of the full-integer TFLite encoder.",
)
@click.option(
    "--version",
    "version",
    default="0.1.0",
    show_default=True,
    help="Artifact version (semver) recorded in the manifest.",
)
@click.option(
    "--hard-sigmoid",
    type=click.Choice(["encoder", "all"]),
    is_flag=False,
    flag_value="encoder",
    default=None,
    help="Replace sigmoids by relu6(x+3)/6 (bare: encoder only; 'all': decoder too).",
)
@click.option(
    "--finetune-epochs",
    type=int,
    default=0,
    show_default=True,
    help="Fine-tune after --hard-sigmoid on synthetic indoor training data.",
)
@click.option(
    "--qat-epochs",
    type=int,
    default=0,
    show_default=True,
    help="Quantization-aware fine-tuning of the TFLite INT8 encoder's FC layers (--int8).",
)
@click.option(
    "--qat-data",
    default=None,
    type=click.Path(dir_okay=False),
    help="QAT training CSI (.mat/.npy/.npz) [default: the calibration source].",
)
@click.option("--qat-samples", type=int, default=DEFAULT_QAT_SAMPLES, show_default=True)
@click.option(
    "--qat-lr", type=float, default=DEFAULT_QAT_LR, show_default=True, help="QAT Adam rate."
)
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@json_option()
def export_command(
    model_name: str,
    latent: str,
    cr: int | None,
    checkpoint: str | None,
    int8: str | None,
    calib: str | None,
    calib_samples: int,
    calib_method: str,
    eval_data: str | None,
    eval_samples: int,
    max_nmse_drop: float,
    min_codeword_sqnr: float,
    max_fidelity_nmse: float,
    int8_layers: str,
    opset: int,
    out_dir: str | None,
    formats: str,
    layout: str,
    tflite_io: str,
    version: str,
    hard_sigmoid: str | None,
    finetune_epochs: int,
    qat_epochs: int,
    qat_data: str | None,
    qat_samples: int,
    qat_lr: float,
    force: bool,
    as_json: bool,
) -> None:
    """Export the UE encoder (ONNX, TFLite; float and INT8) and the BS decoder, gated."""
    from csideploy.gates.numerics import NmseGateError
    from csideploy.models.registry import resolve_model_name
    from csideploy.pipeline.config import ExportConfig
    from csideploy.pipeline.run import run_export
    from csideploy.pipeline.steps import CalibrationWarning

    config = ExportConfig(
        model=resolve_model_name(model_name, latent),
        cr=cr,
        checkpoint=checkpoint,
        int8=int8,
        calib=calib,
        calib_samples=calib_samples,
        calib_method=calib_method,
        eval_data=eval_data,
        eval_samples=eval_samples,
        max_nmse_drop=max_nmse_drop,
        min_codeword_sqnr=min_codeword_sqnr,
        max_fidelity_nmse=max_fidelity_nmse,
        int8_layers=int8_layers,
        opset=opset,
        out=out_dir,
        force=force,
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        layout=layout,
        tflite_io=tflite_io,
        version=version,
        hard_sigmoid=hard_sigmoid,
        finetune_epochs=finetune_epochs,
        qat_epochs=qat_epochs,
        qat_data=qat_data,
        qat_samples=qat_samples,
        qat_lr=qat_lr,
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CalibrationWarning)
            result = run_export(config)
    except NmseGateError as error:
        click.echo("per-tensor SQNR of the INT8 encoder, worst first:", err=True)
        click.echo(error.table(), err=True)
        raise
    for warning in caught:
        if issubclass(warning.category, CalibrationWarning):
            click.echo(f"warning: {warning.message}", err=True)
    warn_float_only_plan(result)
    warn_float_planned_files(result)
    if as_json:
        echo_json(result.to_dict())
        return
    export_summary(result)


def register(group: click.Group) -> None:
    group.add_command(export_command)
