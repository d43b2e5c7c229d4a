"""Helpers shared by the CLI commands."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

from csideploy import console
from csideploy.errors import CsiDeployError


class CsiDeployGroup(click.Group):
    """The command group that turns every project error of any subcommand into one line.

    One place for it, so that no command can forget it: `error: ...` on stderr and the error's
    exit code (2 for bad input), never a traceback; after a command that succeeded, the note
    saying where other libraries' logs went.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
        except CsiDeployError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(error.exit_code)
        if ctx.parent is None:
            note = console.log_note()
            if note:
                click.echo(note, err=True)
        return result


def json_option(help: str = "Print the result as JSON.") -> Callable[[Any], Any]:
    """`--json`: machine-readable output; progress bars off, so stdout stays one document."""

    def quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:
            console.show_progress(False)
        return value

    return click.option("--json", "as_json", is_flag=True, help=help, callback=quiet)


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, sort_keys=False))


_LATENT_HELP = "Latent: fc keeps --model; conv picks its conv-latent variant (clnet -> clnet-cl)."


def latent_option(command: click.Command) -> click.Command:
    """`--latent fc|conv`, shared by train, evaluate and export."""
    return click.option(
        "--latent",
        type=click.Choice(["fc", "conv"]),
        default="fc",
        show_default=True,
        help=_LATENT_HELP,
    )(command)
