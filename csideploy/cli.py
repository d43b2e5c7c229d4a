"""Command line: thin click commands that parse arguments and call one library function each.

Every `CsiDeployError` becomes a one-line `error: ...` on stderr with the error's exit code
(2 for bad input), never a traceback.
"""

from __future__ import annotations

import click

from csideploy import __version__
from csideploy.commands._common import CsiDeployGroup


@click.group(cls=CsiDeployGroup)
@click.version_option(__version__, prog_name="csideploy")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    help="Also show other libraries' logs and warnings (always kept in a log file).",
)
@click.pass_context
def main(context: click.Context, verbose: bool) -> None:
    """csideploy: trained CSI-feedback autoencoder -> verified UE encoder artifacts."""
    from csideploy import console

    if not verbose:
        console.quiet_environment()
    console.configure(verbose=verbose, command=context.invoked_subcommand)


def _register_subcommands() -> None:
    """Attach the command groups that live beside their library code."""
    from csideploy.commands import register_all

    register_all(main)


_register_subcommands()


if __name__ == "__main__":
    main()
