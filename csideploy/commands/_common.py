"""Helpers shared by the CLI commands."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from csideploy import console
from csideploy.errors import CsiDeployError


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn project errors into a one-line message and their exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("as_json"):
            console.show_progress(False)
        try:
            result = command(*args, **kwargs)
        except CsiDeployError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(error.exit_code)
        note = console.log_note()
        if note:
            click.echo(note, err=True)
        return result

    return wrapper


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
