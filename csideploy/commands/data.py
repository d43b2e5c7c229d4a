"""`csideploy data ...`: make CSI datasets in the COST2100 file layout."""

from __future__ import annotations

from pathlib import Path

import click

from csideploy.commands._common import echo_json, reports_errors
from csideploy.errors import CsiDeployError

_FRACTION = click.FloatRange(0, 1, min_open=True, max_open=True)


@click.group("data")
def data_group() -> None:
    """CSI datasets: synthetic data in the COST2100 file layout."""


@data_group.command("synth")
@click.option(
    "--scenario",
    type=click.Choice(["indoor", "outdoor"]),
    default="indoor",
    show_default=True,
    help="Indoor picocell (5.3 GHz) or outdoor rural (300 MHz).",
)
@click.option(
    "-n",
    "--samples",
    "n",
    type=click.IntRange(min=1),
    default=20000,
    show_default=True,
    help="Total samples over all splits.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory to write DATA_H{train,val,test}{in,out}.mat into.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--val-fraction",
    type=_FRACTION,
    default=None,
    help="Fraction of samples for the validation split [default: 0.2].",
)
@click.option(
    "--test-fraction",
    type=_FRACTION,
    default=None,
    help="Fraction of samples for the test split [default: 2/15].",
)
@click.option("--force", is_flag=True, help="Replace existing files.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@reports_errors
def synth_command(
    scenario: str,
    n: int,
    out_dir: Path,
    seed: int,
    val_fraction: float | None,
    test_fraction: float | None,
    force: bool,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Generate synthetic angular-delay CSI and write train / val / test .mat files."""
    from csideploy.calibration.synthetic import write_synthetic_dataset

    fractions = {
        key: value
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction))
        if value is not None
    }
    try:
        files = write_synthetic_dataset(
            out_dir,
            scenario=scenario,
            n=n,
            seed=seed,
            progress=not no_progress,
            overwrite=force,
            **fractions,
        )
    except CsiDeployError:
        raise
    except ValueError as error:  # e.g. fractions that leave a split empty
        raise click.UsageError(str(error)) from None
    if as_json:
        echo_json({role: str(path) for role, path in files.items()})
        return
    for role, path in files.items():
        click.echo(f"{role:<9}{path}")


def register(group: click.Group) -> None:
    group.add_command(data_group)
