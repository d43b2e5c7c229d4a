"""`csideploy export`: split, export to ONNX, optionally quantize to INT8, gate, write."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from csideploy.commands._common import echo_json, json_option, latent_option
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
    _warn_float_only_plan(result)
    _warn_float_planned_files(result)
    if as_json:
        echo_json(result.to_dict())
        return
    study = result.surgery.get("hard_sigmoid")
    if study:
        tuned = study["nmse_finetuned_db"]
        click.echo(
            f"hard-sigmoid ({study['scope']}): replaced {len(study['replaced'])} sigmoid(s); "
            f"NMSE {study['nmse_before_db']:.2f} -> {study['nmse_after_db']:.2f} dB"
            + (f" -> {tuned:.2f} dB after {study['finetune_epochs']} epoch(s)" if tuned else "")
            + (" (the encoder has no sigmoid)" if study["nothing_to_replace"] else "")
        )
    module = result.surgery.get("export_module")
    if module:
        gate = module["gate"]
        click.echo(
            f"export copy: {len(module['bn_folded'])} BatchNorm(s) folded, "
            f"{len(module['linearized'])} layer(s) linearized; {gate['name']} "
            f"{gate['measured']:.2g} (limit {gate['limit']:g})"
        )
    click.echo(
        f"exported {result.model} CR 1/{result.cr} to {result.out_dir} "
        f"in {sum(result.seconds.values()):.1f} s"
    )
    _summary_table(result)
    _qat_lines(result)
    click.echo(
        f"float NMSE {result.float_nmse_db:.2f} dB ({result.convention.name}) on "
        f"{result.evaluation.samples} samples of {result.evaluation.source}"
    )
    _ship_line(result.out_dir)


def _summary_table(result: Any) -> None:
    """One line per written file: size, error, NMSE, ΔNMSE, quick latency, gates."""
    click.echo(
        f"  {'file':<20}{'side':<5}{'prec':<6}{'bytes':>11}  {'max-abs error':<19}"
        f"{'NMSE dB':>8}{'ΔNMSE':>8}{'p50 µs':>8}  gates  (INT8: vs float)"
    )
    for a in result.artifacts:
        n = a.numerics
        error = f"{n.compared_output} {n.max_abs_error:.2g}"
        if n.level_mismatch is not None:
            error = f"levels {n.level_mismatch:.2%}"
        p50 = f"{a.latency.p50_us:.0f}" if a.latency else "-"
        gates = "ok" if all(g.passed for g in a.gates) else "FAILED"
        click.echo(
            f"  {a.file:<20}{a.side:<5}{a.precision:<6}{a.bytes:>11,}  {error:<19}"
            f"{n.nmse_db:>8.2f}{n.delta_nmse_db:>+8.3f}{p50:>8}  {gates}{_fidelity(n)}"
        )


def _qat_lines(result: Any) -> None:
    """What quantization-aware fine-tuning did, per file that ran it."""
    for artifact in result.artifacts:
        qat = artifact.details.get("qat")
        if not qat:
            continue
        if not qat["epochs"]:
            click.echo(f"qat: {artifact.file}: the layer plan has no FC layer; nothing fine-tuned")
            continue
        measured = qat["calibration"] or {}
        per_epoch = sum(qat["epoch_seconds"]) / max(len(qat["epoch_seconds"]), 1)
        click.echo(
            f"qat: {artifact.file}: {qat['epochs']} epoch(s) on {qat['samples']} samples of "
            f"{qat['data']} ({per_epoch:.1f} s/epoch), {', '.join(qat['layers'])} int8; "
            f"calibration ΔNMSE {measured.get('delta_nmse_db', float('nan')):+.3f} dB -> "
            + ("kept" if qat["accepted"] else "over the layer budget, file written without it")
        )


def _warn_float_planned_files(result: Any) -> None:
    """Say so when an INT8 TFLite or ExecuTorch file got no int8 layer while the ONNX plan
    quantized some: the plan's "dynamic" FC form (per-block int8 activations) has no LiteRT
    or ExecuTorch counterpart, and such a file computes in float."""
    planned = [a for a in result.artifacts if getattr(a, "quantization", None) is not None]
    dynamic = [
        node
        for a in planned
        for node, form in (a.quantization.layer_plan or {}).get("precision", {}).items()
        if form == "dynamic"
    ]
    runtimes = {"tflite": "LiteRT", "pte": "ExecuTorch"}
    hints = {"tflite": "; --qat-epochs 1 fine-tunes the FC for LiteRT."}
    for artifact in result.artifacts:
        if artifact.details.get("quantized_layers") == [] and dynamic:
            click.echo(
                f"warning: {artifact.file} computes in float: the layer plan quantizes "
                f"{', '.join(dynamic)} in ONNX with per-block int8 activations, which "
                f"{runtimes.get(artifact.format, artifact.format)} lacks (docs/int8.md); "
                f"the ONNX INT8 file is the quantized one{hints.get(artifact.format, '.')}",
                err=True,
            )


def _warn_float_only_plan(result: Any) -> None:
    """Say so when the measured layer plan kept every layer float: the INT8 files then
    compute in float, and a user must not take them for quantized encoders."""
    plans = [
        getattr(a.quantization, "layer_plan", None)
        for a in result.artifacts
        if getattr(a, "quantization", None) is not None
    ]
    empty = [p for p in plans if p is not None and not p["quantized"]]
    if not empty:
        return
    reasons = "; ".join(
        f"{d['node']}: {d['reason']}" for d in empty[0]["decisions"] if d.get("sqnr_db") is not None
    )
    click.echo(
        "warning: the INT8 layer plan kept every layer in float (slower in int8, or over the "
        f"accuracy budget{': ' + reasons if reasons else ''}); the INT8 files compute in float. "
        "--int8-layers all quantizes every layer.",
        err=True,
    )


def _ship_line(out_dir: Path) -> None:
    """Which file to ship, as report.html words it."""
    from csideploy.report.choose import choose
    from csideploy.report.load import load_run

    choice = choose(load_run(out_dir))
    click.echo(f"ship: {choice.file or 'nothing'}; why, plots and gates: {out_dir / 'report.html'}")


def _fidelity(numerics: Any) -> str:
    """Codeword SQNR and reconstruction NMSE against the float model, for INT8 files."""
    sqnr, fidelity = numerics.codeword_sqnr_db, numerics.fidelity_nmse_db
    if sqnr is None or fidelity is None or sqnr > 80:
        return ""
    return f"  (codeword SQNR {sqnr:.1f} dB, NMSE {fidelity:.1f} dB)"


def register(group: click.Group) -> None:
    group.add_command(export_command)
