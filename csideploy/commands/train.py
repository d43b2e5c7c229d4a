"""`csideploy train` and `csideploy evaluate`: make a checkpoint, and measure one."""

from __future__ import annotations

from pathlib import Path

import click

from csideploy import console
from csideploy.commands._common import echo_json, json_option, latent_option

_CONVENTIONS = ("linear", "batch_db", "sample_db")


@click.command("train")
@click.option("--model", "model_name", required=True, help="Zoo model name, e.g. clnet.")
@latent_option
@click.option(
    "--cr",
    type=int,
    required=True,
    help="Compression reduction, e.g. 4 for 1/4 (dualnet-mp: phase reduction 8 or 16).",
)
@click.option(
    "--data",
    "data_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory with DATA_Htrain*.mat and DATA_Hval*.mat (dualnet-mp: paired, with HT_UL).",
)
@click.option("--epochs", type=int, required=True, help="Number of epochs (dualnet-mp: per stage).")
@click.option(
    "--train-snr",
    "train_snr",
    type=float,
    default=None,
    help="AWGN on the codeword at this SNR (dB) while training only; none at inference.",
)
@click.option(
    "--quantizer",
    type=click.Choice(["lsq", "lszq"]),
    default=None,
    help="LORA: learned codeword quantizer.",
)
@click.option("--bits", type=int, default=None, help="LORA: quantizer bits, 4 or 8 [default: 8].")
@click.option(
    "--scheduler",
    type=click.Choice(["cosine", "const"]),
    default="cosine",
    show_default=True,
    help="Warm-up + cosine annealing, or a constant rate (dualnet-mp: always constant).",
)
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak learning rate.")
@click.option("--batch-size", type=int, default=200, show_default=True)
@click.option(
    "--warmup-epochs",
    type=int,
    default=30,
    show_default=True,
    help="Linear warm-up (clamped to 10% of the epochs).",
)
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True
)
@click.option(
    "--scenario",
    type=click.Choice(["indoor", "outdoor"]),
    default=None,
    help="Pick DATA_H*in or DATA_H*out when the directory holds both.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint to write [default: <model>_cr<cr>.pt].",
)
@click.option("--resume", is_flag=True, help="Continue from <out>.resume (not for dualnet-mp).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--threads",
    type=int,
    default=None,
    help="CPU threads for torch (1 is fastest on a CPU shared with other jobs).",
)
@click.option(
    "--max-minutes",
    type=float,
    default=None,
    help="Start no epoch after this many minutes (resumes included); keep the best weights.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@json_option()
def train_command(
    model_name: str,
    latent: str,
    cr: int,
    data_dir: Path,
    epochs: int,
    train_snr: float | None,
    quantizer: str | None,
    bits: int | None,
    scheduler: str,
    lr: float,
    batch_size: int,
    warmup_epochs: int,
    device: str,
    scenario: str | None,
    out_path: Path | None,
    resume: bool,
    seed: int,
    threads: int | None,
    max_minutes: float | None,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Train a model with the papers' recipe and write a project checkpoint.

    DualNet-MP trains with its two-stage recipe on paired UL/DL files (HT and HT_UL).
    """
    from csideploy.models.registry import resolve_model_name
    from csideploy.train import TrainConfig, train
    from csideploy.train.distributed import launch_from_env

    name = resolve_model_name(model_name, latent)
    try:
        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            scheduler=scheduler,
            warmup_epochs=warmup_epochs,
            seed=seed,
            device=device,
            threads=threads,
            train_snr_db=train_snr,
            max_minutes=max_minutes,
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    launch = launch_from_env(config)
    if launch.distributed and launch.is_main and not as_json:
        click.echo(launch.describe(config))
    with console.captured("train", own_stderr=True, keep=launch.is_main):
        result = train(
            name,
            cr,
            data_dir,
            config,
            out_path=out_path or Path(f"{name}_cr{cr}.pt"),
            resume=resume,
            progress=not no_progress,
            scenario=scenario,
            options={"quantizer": quantizer, "bits": bits},
        )
    if not launch.is_main:
        return
    if as_json:
        echo_json(result.as_dict())
        return
    click.echo(
        f"trained {name} CR 1/{cr}: {result.epochs_run} epochs in {result.seconds:.1f} s; "
        f"best val NMSE {result.best_val_nmse_db:.2f} dB at epoch {result.best_epoch} "
        f"(final {result.final_val_nmse_db:.2f} dB; convention {result.nmse_convention})"
    )
    for stage, losses in (result.stage_losses or {}).items():
        click.echo(f"{stage} loss: {losses[0]:.4g} -> {losses[-1]:.4g}")
    click.echo(f"checkpoint: {result.checkpoint}")


def register(group: click.Group) -> None:
    group.add_command(train_command)
