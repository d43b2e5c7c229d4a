"""`csideploy data ...`: make CSI datasets in the COST2100 file layout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from csideploy import console
from csideploy.commands._cluster import cluster_options
from csideploy.commands._common import echo_json, json_option
from csideploy.errors import CsiDeployError

_FRACTION = click.FloatRange(0, 1, min_open=True, max_open=True)
_POSITIVE = click.FloatRange(0, min_open=True)
# Kept literal so that `csideploy --help` does not import numpy; a test checks them against
# csideploy.calibration.sionna_source.SCENARIOS / ARRAYS.
SCENARIOS = {
    "builtin": ("indoor", "outdoor"),
    "sionna": ("uma", "umi", "rma"),
    "cost2100": ("indoor", "outdoor"),
}
SIONNA_ARRAYS = ("ula", "upa-xpol")
SIONNA_ONLY = (
    "los",
    "dl_carrier_ghz",
    "ue_speed_kmh",
    "subcarriers",
    "spacing_khz",
    "array",
    "indoor_probability",
    "chunk",
)
"""Parameters of the Sionna generator that the built-in one does not have."""
COST2100_ONLY = ("cost2100_dir",)
"""Parameters of the COST2100 source only."""


@click.group("data")
def data_group() -> None:
    """CSI datasets in the COST2100 file layout: make them (synth), check downloads (check)."""


def _sionna_options(command: Any) -> Any:
    """The `--source sionna` knobs (defaults: the LORA seed's 38.901 setup, UMa NLOS)."""
    options = [
        click.option(
            "--los",
            is_flag=True,
            default=False,
            help="Sionna only: line-of-sight drops [default: NLOS].",
        ),
        click.option(
            "--dl-carrier-ghz",
            type=_POSITIVE,
            default=3.5,
            show_default=True,
            help="Sionna only: (DL) carrier frequency in GHz.",
        ),
        click.option(
            "--ue-speed-kmh",
            type=click.FloatRange(min=0),
            default=6.0,
            show_default=True,
            help="Sionna only: UE speed.",
        ),
        click.option(
            "--subcarriers",
            type=click.IntRange(min=32),
            default=1024,
            show_default=True,
            help="Sionna only: subcarriers (the first 32 delay rows are kept).",
        ),
        click.option(
            "--spacing-khz",
            type=_POSITIVE,
            default=30.0,
            show_default=True,
            help="Sionna only: subcarrier spacing.",
        ),
        click.option(
            "--array",
            type=click.Choice(SIONNA_ARRAYS),
            default="ula",
            show_default=True,
            help="Sionna only: BS array, 1x32 ULA or 4x4 cross-polarised panel (32 ports).",
        ),
        click.option(
            "--indoor-probability",
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="Sionna only: probability that a UE is indoors.",
        ),
        click.option(
            "--chunk",
            type=click.IntRange(min=1),
            default=256,
            show_default=True,
            help="Sionna only: drops generated per step (bounds memory).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@data_group.command("synth")
@click.option(
    "--source",
    type=click.Choice(list(SCENARIOS)),
    default="builtin",
    show_default=True,
    help="Built-in clustered-multipath generator, 3GPP TR 38.901 channels via Sionna "
    "(the optional 'sionna' extra), or the COST2100 model under GNU Octave.",
)
@click.option(
    "--cost2100-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="COST2100 only: the model's MATLAB code (the folder with cost2100.m, or its parent).",
)
@cluster_options("Same files for any N. --source cost2100: N Octave processes here, no Ray.")
@click.option(
    "--scenario",
    type=click.Choice([s for names in SCENARIOS.values() for s in names]),
    default=None,
    help="builtin / cost2100: indoor (5.3 GHz picocell) or outdoor (300 MHz rural); sionna: "
    "uma, umi or rma [default: indoor / uma].",
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
@click.option(
    "--paired",
    is_flag=True,
    help="Paired UL/DL data: each split file holds HT (downlink) and HT_UL (uplink, same drops).",
)
@click.option(
    "--ul-carrier-ghz",
    type=_POSITIVE,
    default=None,
    help="With --paired: UL carrier in GHz [default: builtin indoor 5.1; otherwise "
    "DL x 2.0/2.1, e.g. 0.286 for builtin outdoor, 3.333 for sionna at 3.5].",
)
@_sionna_options
@click.option(
    "--force", is_flag=True, help="Replace the files of a data set csideploy wrote there."
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option()
def synth_command(
    source: str,
    cost2100_dir: Path | None,
    workers: int | None,
    ray_address: str | None,
    scenario: str | None,
    n: int,
    out_dir: Path,
    seed: int,
    val_fraction: float | None,
    test_fraction: float | None,
    paired: bool,
    ul_carrier_ghz: float | None,
    force: bool,
    no_progress: bool,
    as_json: bool,
    **sionna: Any,
) -> None:
    """Generate angular-delay CSI and write train / val / test .mat files.

    Splits are DATA_H{train,val,test}{in|out}.mat (HT, float32 N x 2048) plus the test
    split's DATA_HtestF*_all.mat and a JSON manifest. Sionna data use the `out` names.
    --source cost2100 runs the COST2100 model (GPL-3, not in the package; e.g. the repository's
    third_party/cost2100) under GNU Octave: --workers processes here, or --ray-address tasks.
    """
    scenario = _scenario_for(source, scenario)
    _refuse_unused_options(source, paired, ul_carrier_ghz)
    if source == "cost2100":
        if cost2100_dir is None:
            raise click.UsageError("--source cost2100 needs --cost2100-dir DIR (the model's code)")
        if paired:
            raise click.UsageError("--paired applies to --source builtin or sionna only")
        from csideploy.calibration.sharded_sources import cost2100_options

        sionna = cost2100_options(cost2100_dir, workers, ray_address)
    elif workers is not None or ray_address is not None:
        sionna["cluster"] = (workers, ray_address)
    common: dict[str, Any] = {
        "scenario": scenario,
        "n": n,
        "seed": seed,
        "overwrite": force,
        "progress": not no_progress,
        **{
            key: value
            for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction))
            if value is not None
        },
    }
    try:
        with console.captured("data", own_stderr=True):
            summary = _write(out_dir, source, paired, ul_carrier_ghz, common, sionna)
    except CsiDeployError:
        raise
    except ValueError as error:  # e.g. fractions that leave a split empty
        raise click.UsageError(str(error)) from None
    if as_json:
        echo_json(summary)
        return
    click.echo(_headline(summary))
    for role, path in summary["files"].items():
        click.echo(f"{role:<9}{path}")


def _scenario_for(source: str, scenario: str | None) -> str:
    """The scenario, defaulted per source; a usage error when the source has no such one."""
    valid = SCENARIOS[source]
    if scenario is None:
        return valid[0]
    if scenario not in valid:
        raise click.BadParameter(
            f"{scenario!r} is not a scenario of --source {source}, which takes {', '.join(valid)}",
            param_hint="'--scenario'",
        )
    return scenario


def _refuse_unused_options(source: str, paired: bool, ul_carrier_ghz: float | None) -> None:
    """A usage error for options the chosen generator would ignore, rather than ignoring them."""
    ctx = click.get_current_context()
    given = {ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT}
    owners = {name: "sionna" for name in SIONNA_ONLY}
    owners.update({name: "cost2100" for name in COST2100_ONLY})
    for param in ctx.command.params:
        owner = owners.get(param.name or "")
        if owner and owner != source and ctx.get_parameter_source(param.name) in given:
            raise click.UsageError(
                f"{param.opts[0]} applies to --source {owner} only; --source {source} has no "
                "such setting"
            )
    if ul_carrier_ghz is not None and not paired:
        raise click.UsageError("--ul-carrier-ghz applies to paired data only; add --paired")


def _write(
    out_dir: Path,
    source: str,
    paired: bool,
    ul_carrier_ghz: float | None,
    common: dict[str, Any],
    sionna: dict[str, Any],
) -> dict[str, Any]:
    """Run the generator the options select; returns `_summary` of what it wrote."""
    cluster = sionna.pop("cluster", None)
    if cluster is not None and source != "sionna":
        from csideploy.calibration.sharded_sources import write_sharded

        extra = sionna if source == "cost2100" else {"ul_carrier_ghz": ul_carrier_ghz}
        files, manifest = write_sharded(out_dir, source, paired, cluster, {**common, **extra})
        return _summary(source, paired, files, manifest)
    if source == "cost2100":
        from csideploy.calibration.cost2100_source import write_cost2100_dataset

        files = write_cost2100_dataset(out_dir, **sionna, **common)
        return _summary(source, paired, files, json.loads(files["manifest"].read_text()))
    if source == "sionna":
        from csideploy.calibration.paired import DEFAULT_UL_RATIO
        from csideploy.calibration.sionna_dataset import write_sionna_dataset

        dl = sionna.pop("dl_carrier_ghz")
        ul = ul_carrier_ghz if ul_carrier_ghz is not None else dl * DEFAULT_UL_RATIO["outdoor"]
        if common["progress"]:
            click.echo("loading Sionna (the first import takes several seconds) ...", err=True)
        options = {"carrier_ghz": dl, "paired_ul_dl": (ul, dl) if paired else None, **sionna}
        if cluster is not None:
            from csideploy.calibration.sharded_sources import write_sharded_sionna_on

            written = write_sharded_sionna_on(out_dir, cluster, {**options, **common})
        else:
            written = write_sionna_dataset(out_dir, **options, **common)
        return _summary(source, paired, written.files, written.manifest)
    if paired:
        from csideploy.calibration.paired import write_paired_dataset

        ul_hz = None if ul_carrier_ghz is None else ul_carrier_ghz * 1e9
        written = write_paired_dataset(out_dir, ul_carrier_hz=ul_hz, **common)
        return _summary(source, paired, written.files, written.manifest)
    from csideploy.calibration.dataset_writer import write_synthetic_dataset

    files = write_synthetic_dataset(out_dir, **common)
    return _summary(source, paired, files, json.loads(files["manifest"].read_text()))


def _summary(
    source: str, paired: bool, files: dict[str, Path], manifest: dict[str, Any]
) -> dict[str, Any]:
    """What was written: source, scenario, variables per split file, carriers, counts, files."""
    config = manifest.get("config", {})
    band = manifest.get("settings", {}).get("band_hz")
    dl_hz = manifest.get("dl_carrier_hz", config.get("carrier_hz", band and sum(band) / 2))
    ul_hz = manifest.get("ul_carrier_hz")
    scenario = manifest.get("scenario", config.get("scenario"))
    return {
        "source": source,
        "scenario": scenario,
        "los": config.get("los") if source == "sionna" else None,
        "paired": paired,
        "variables": list(manifest.get("variables", {"HT": "CSI"})),
        "dl_carrier_ghz": None if dl_hz is None else dl_hz / 1e9,
        "ul_carrier_ghz": None if ul_hz is None else ul_hz / 1e9,
        "counts": manifest["counts"],
        "files": {role: str(path) for role, path in files.items()},
    }


def _headline(summary: dict[str, Any]) -> str:
    """One line: source, scenario, what the split files hold, split sizes."""
    counts = summary["counts"]
    sizes = f"{counts['train']} train / {counts['val']} val / {counts['test']} test"
    what = f"{summary['source']} {summary['scenario']}"
    if summary["source"] == "sionna":
        what += " LOS" if summary["los"] else " NLOS"
    if summary["paired"]:
        links = (
            f"paired UL/DL: HT = DL {summary['dl_carrier_ghz']:.4g} GHz, "
            f"HT_UL = UL {summary['ul_carrier_ghz']:.4g} GHz"
        )
    else:
        links = f"HT at {summary['dl_carrier_ghz']:.4g} GHz"
    return f"{what}, {links}; {sizes}"


def register(group: click.Group) -> None:
    from csideploy.commands.data_check import check_command

    data_group.add_command(check_command)
    group.add_command(data_group)
