"""What commands print: typed results turned into the lines a user reads.

Kept apart from the commands, which parse options and call one library function, so that the
wording of the output has one home and the commands stay short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def export_summary(result: Any) -> None:
    """The export's summary: surgery, the per-file table, QAT, the float NMSE, the file to ship."""
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


def warn_float_planned_files(result: Any) -> None:
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


def warn_float_only_plan(result: Any) -> None:
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
