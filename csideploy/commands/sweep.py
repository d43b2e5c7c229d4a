"""`csideploy sweep`: export (+ bench) over a grid of cells, then one comparison report."""

from __future__ import annotations

from pathlib import Path

import click

from csideploy import console
from csideploy.commands._cluster import cluster_options
from csideploy.commands._common import echo_json, json_option


@click.command("sweep")
@click.option(
    "--model", "models", required=True, help="Comma list of zoo models, e.g. clnet,crnet."
)
@click.option("--cr", "crs", required=True, help="Comma list of compression reductions, e.g. 4,32.")
@click.option(
    "--format", "formats", default="onnx", show_default=True, help="Comma list: onnx, tflite, pte."
)
@click.option(
    "--int8",
    "int8_modes",
    default="none",
    show_default=True,
    help="Comma list of INT8 modes: none (float only), static, dynamic.",
)
@click.option(
    "--target",
    "targets",
    default=None,
    help="Comma list of bench targets (local, ssh://user@host, qemu:ROOT) [default: no bench; "
    "the export's quick latency is reported].",
)
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--eval-samples", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--calib-samples", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--runs",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="Bench: timed runs per file.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Bench: untimed runs first.",
)
@cluster_options("Each worker runs one cell at a time.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option()
def sweep_command(
    models: str,
    crs: str,
    formats: str,
    int8_modes: str,
    targets: str | None,
    out_dir: Path,
    eval_samples: int,
    calib_samples: int,
    runs: int,
    warmup: int,
    workers: int | None,
    ray_address: str | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Export every (model, CR, format, INT8 mode, target) with shipped weights into
    OUT/cells/, skipping finished cells, then write OUT/report.html, report.md, sweep.json.

    Cells whose model has no shipped weights at that CR are listed and skipped. Exit code 4:
    some cells failed after 3 attempts (the others are kept; rerun to finish).
    """
    from csideploy.sweep.cell import CellOptions
    from csideploy.sweep.grid import int_list, split_list
    from csideploy.sweep.run import SweepConfig, run_sweep

    config = SweepConfig(
        models=split_list(models, "--model"),
        crs=int_list(crs, "--cr"),
        out=out_dir,
        formats=split_list(formats, "--format"),
        int8_modes=split_list(int8_modes, "--int8"),
        targets=split_list(targets, "--target") if targets is not None else (),
        options=CellOptions(eval_samples, calib_samples, runs, warmup),
        workers=workers,
        address=ray_address,
        progress=not no_progress and not as_json,
    )
    with console.captured("sweep", own_stderr=True):
        result = run_sweep(config)
    if as_json:
        echo_json(result.as_dict())
        return
    for cell, reason in result.skipped:
        click.echo(f"skipped {cell}: {reason}", err=True)
    kept = len(result.cells) - len(result.ran)
    click.echo(f"{len(result.ran)} cell(s) run, {kept} kept from an earlier run")
    click.echo(f"{'cell':<34}{'file':<22}{'bytes':>11}{'NMSE dB':>9}{'p50 µs':>9}")
    for row in result.rows:
        nmse = f"{row['nmse_db']:.2f}" if row["nmse_db"] is not None else "-"
        p50 = f"{row['p50_us']:.0f}" if row["p50_us"] is not None else "-"
        click.echo(f"{row['cell']:<34}{row['file']:<22}{row['bytes'] or 0:>11,}{nmse:>9}{p50:>9}")
    click.echo(f"wrote {result.report_html}, {result.report_md} and {result.summary}")


def register(group: click.Group) -> None:
    group.add_command(sweep_command)
