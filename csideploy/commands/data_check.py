"""`csideploy data check DIR`: name the released COST2100 files a directory holds."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from csideploy.commands._common import echo_json, json_option


@click.command("check")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--no-progress", is_flag=True, help="No progress bar while hashing large files.")
@json_option()
def check_command(directory: Path, no_progress: bool, as_json: bool) -> None:
    """Name each released COST2100 file in DIRECTORY (sha256 and size), or call it unknown.

    Files whose size matches a released file are hashed (streamed); .mat files are opened as
    data (MATLAB v5 or v7.3) to show their variables and shapes.
    """
    from csideploy.calibration.release_check import check_directory, summary

    reports = check_directory(directory, progress=not no_progress)
    totals = summary(reports)
    if as_json:
        echo_json({"directory": str(directory), "files": [asdict(r) for r in reports], **totals})
        return
    if not reports:
        click.echo(f"{directory}: no files")
    for report in reports:
        click.echo(report.line())
    found = len(totals["released"])
    click.echo(
        f"{found} of 8 released files found; {len(totals['modified'])} modified, "
        f"{len(totals['unknown'])} unknown"
    )
