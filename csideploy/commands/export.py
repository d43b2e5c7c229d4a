"""`csideploy export`: split, export to ONNX, optionally quantize to INT8, gate, write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from csideploy.commands._common import echo_json, latent_option, reports_errors
from csideploy.export import (
    CALIBRATION_METHODS,
    DEFAULT_CALIB_SAMPLES,
    DEFAULT_EVAL_SAMPLES,
    DEFAULT_MAX_NMSE_DROP_DB,
    DEFAULT_OPSET,
    INT8_MODES,
    MIN_CALIB_SAMPLES,
)


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
    type=click.Choice(INT8_MODES),
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
    type=click.Choice(CALIBRATION_METHODS),
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
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@reports_errors
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
    opset: int,
    out_dir: str | None,
    formats: str,
    layout: str,
    tflite_io: str,
    version: str,
    hard_sigmoid: str | None,
    finetune_epochs: int,
    force: bool,
    as_json: bool,
) -> None:
    """Export the UE encoder (ONNX, TFLite; float and INT8) and the BS decoder, gated."""
    from csideploy.export.numerics import NmseGateError
    from csideploy.export.recipe import ExportConfig, run_export
    from csideploy.models.registry import resolve_model_name

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
        opset=opset,
        out=out_dir,
        force=force,
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        layout=layout,
        tflite_io=tflite_io,
        version=version,
        hard_sigmoid=hard_sigmoid,
        finetune_epochs=finetune_epochs,
    )
    try:
        result = run_export(config)
    except NmseGateError as error:
        click.echo("per-tensor SQNR of the INT8 encoder, worst first:", err=True)
        click.echo(error.table(), err=True)
        raise
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
    click.echo(
        f"float NMSE {result.float_nmse_db:.2f} dB ({result.convention.name}) on "
        f"{result.evaluation.samples} samples of {result.evaluation.source}"
    )
    _ship_line(result.out_dir)


def _summary_table(result: Any) -> None:
    """One line per written file: size, error, NMSE, ΔNMSE, quick latency, gates."""
    click.echo(
        f"  {'file':<20}{'side':<5}{'prec':<6}{'bytes':>11}  {'max-abs error':<19}"
        f"{'NMSE dB':>8}{'ΔNMSE':>8}{'p50 µs':>8}  gates"
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
            f"{n.nmse_db:>8.2f}{n.delta_nmse_db:>+8.3f}{p50:>8}  {gates}"
        )


def _ship_line(out_dir: Path) -> None:
    """Which file to ship, as report.html words it."""
    from csideploy.report.choose import choose
    from csideploy.report.load import load_run

    choice = choose(load_run(out_dir))
    click.echo(f"ship: {choice.file or 'nothing'}; why, plots and gates: {out_dir / 'report.html'}")


def register(group: click.Group) -> None:
    group.add_command(export_command)
