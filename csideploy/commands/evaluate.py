"""`csideploy evaluate`: reconstruction NMSE of a checkpoint on CSI data."""

from __future__ import annotations

from pathlib import Path

import click

from csideploy.commands._common import echo_json, json_option, latent_option

_CONVENTIONS = ("linear", "batch_db", "sample_db")


@click.command("evaluate")
@click.option("--model", "model_name", required=True, help="Zoo model name, e.g. clnet.")
@latent_option
@click.option("--cr", type=int, default=None, help="Compression reduction (else from checkpoint).")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path))
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="A CSI file (.mat/.npy/.npz) or a directory (its test split).",
)
@click.option(
    "--convention",
    type=click.Choice(_CONVENTIONS),
    default="linear",
    show_default=True,
    help="How NMSE is averaged (see the README).",
)
@click.option("--scenario", type=click.Choice(["indoor", "outdoor"]), default=None)
@click.option("--limit", type=int, default=None, help="Use only the first N samples.")
@click.option(
    "--snr",
    "snrs",
    default=None,
    help="Comma-separated SNRs (dB) of AWGN on the codeword, e.g. 0,10,20,40.",
)
@click.option(
    "--hf",
    type=click.Path(path_type=Path),
    default=None,
    help="HF_all file for rho [default: DATA_HtestF*_all.mat beside the data].",
)
@json_option()
def evaluate_command(
    model_name: str,
    latent: str,
    cr: int | None,
    checkpoint: Path,
    data: Path,
    convention: str,
    scenario: str | None,
    limit: int | None,
    snrs: str | None,
    hf: Path | None,
    as_json: bool,
) -> None:
    """Reconstruction NMSE (dB) of a checkpoint on CSI data, under a named convention."""
    from csideploy.evaluate import evaluate_checkpoint, snr_sweep_checkpoint
    from csideploy.models.registry import resolve_model_name

    model_name = resolve_model_name(model_name, latent)
    if snrs is not None:
        try:
            levels = [float(v) for v in snrs.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(
                f"not a list of numbers: {snrs!r}", param_hint="--snr"
            ) from None
        points = snr_sweep_checkpoint(
            model_name,
            checkpoint,
            data,
            levels,
            convention=convention,
            cr=cr,
            scenario=scenario,
            limit=limit,
        )
        if as_json:
            echo_json({"convention": convention, "points": points})
        else:
            for point in points:
                click.echo(
                    f"SNR {point['snr_db']:g} dB: NMSE {point['nmse_db']:.2f} dB ({convention})"
                )
        return

    result = evaluate_checkpoint(
        model_name,
        checkpoint,
        data,
        convention=convention,
        cr=cr,
        scenario=scenario,
        limit=limit,
        hf=hf,
    )
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(result.summary())


def register(group: click.Group) -> None:
    group.add_command(evaluate_command)
