"""`--workers N` / `--ray-address ADDR`: the options of every command that fans out over Ray."""

from __future__ import annotations

from typing import Any

import click

WORKERS_HELP = (
    "Run the shards on a local Ray runtime with N worker processes (csideploy[cluster]); "
    "--source cost2100: N Octave processes. Output is the same for any N."
)
ADDRESS_HELP = (
    "Run the shards on the Ray cluster at ADDR (host:port of `ray start --head`, or 'auto'); "
    "every node needs csideploy installed."
)


def cluster_options(command: Any) -> Any:
    """Add `--workers` and `--ray-address` to a click command."""
    command = click.option("--ray-address", default=None, metavar="ADDR", help=ADDRESS_HELP)(
        command
    )
    return click.option(
        "--workers", type=click.IntRange(min=1), default=None, metavar="N", help=WORKERS_HELP
    )(command)
