"""`--workers N` / `--ray-address ADDR`: the options of every command that fans out over Ray."""

from __future__ import annotations

from typing import Any

import click

WORKERS_HELP = "Run the shards on a local Ray runtime with N worker processes (csideploy[cluster])."
ADDRESS_HELP = (
    "Run the shards on the Ray cluster at ADDR (host:port of `ray start --head`, or 'auto'); "
    "every node needs csideploy installed."
)


def cluster_options(note: str) -> Any:
    """A decorator adding `--workers` (its help ending in `note`) and `--ray-address`."""

    def add(command: Any) -> Any:
        address = click.option("--ray-address", default=None, metavar="ADDR", help=ADDRESS_HELP)
        workers = click.option(
            "--workers",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help=f"{WORKERS_HELP} {note}",
        )
        return workers(address(command))

    return add
