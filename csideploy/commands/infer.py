"""`csideploy infer`: run a checkpoint (whole model, encoder or decoder) on a .npy array."""

from __future__ import annotations

from pathlib import Path

import click

from csideploy.commands._common import echo_json, json_option

_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command("infer")
@click.option("--model", "model_name", required=True, help="Model name (see `csideploy models`).")
@click.option(
    "--cr",
    type=click.IntRange(min=1),
    default=None,
    help="Compression reduction, e.g. 4 for 1/4 [default: the checkpoint's].",
)
@click.option(
    "--checkpoint",
    type=_FILE,
    default=None,
    help="Checkpoint file (any supported format) [default: the shipped one].",
)
@click.option(
    "--decoder-checkpoint",
    type=_FILE,
    default=None,
    help="Decoder file when --checkpoint holds only the encoder (CLNet's split files).",
)
@click.option(
    "--input",
    "input_path",
    required=True,
    type=_FILE,
    help="(N, 2, 32, 32) CSI .npy, or (N, M) codewords for --part decoder.",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=_FILE,
    help="Where to write the float32 .npy result.",
)
@click.option(
    "--part",
    type=click.Choice(["full", "encoder", "decoder"]),
    default="full",
    show_default=True,
    help="Whole model, UE encoder (-> codewords) or BS decoder.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing output file.")
@json_option()
def infer_command(
    model_name: str,
    cr: int | None,
    checkpoint: Path | None,
    decoder_checkpoint: Path | None,
    input_path: Path,
    output_path: Path,
    part: str,
    batch_size: int,
    force: bool,
    as_json: bool,
) -> None:
    """Run a model, or its encoder or decoder alone, on an array and save the output."""
    from csideploy.models.inference import infer_file

    result = infer_file(
        input_path,
        output_path,
        model=model_name,
        cr=cr,
        checkpoint=checkpoint,
        decoder_checkpoint=decoder_checkpoint,
        part=part,
        batch_size=batch_size,
        overwrite=force,
    )
    if as_json:
        echo_json(result.as_dict())
        return
    side = "whole model" if result.part == "full" else result.part
    click.echo(
        f"wrote {result.output}: {result.output_shape} float32, {side} of "
        f"{result.model} CR 1/{result.cr} ({result.source_format}, "
        f"sha256 {result.checkpoint_sha256[:12]})"
    )


def register(group: click.Group) -> None:
    group.add_command(infer_command)
