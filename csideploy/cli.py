"""Command line: thin click commands that parse arguments and call one library function each.

Every `CsiDeployError` becomes a one-line `error: ...` on stderr with the error's exit code
(2 for bad input), never a traceback.
"""

from __future__ import annotations

import click

from csideploy import __version__
from csideploy.commands._common import echo_json, reports_errors


@click.group()
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


@main.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--model", "names", multiple=True, help="Only these models (repeatable).")
@reports_errors
def models_command(as_json: bool, names: tuple[str, ...]) -> None:
    """List the zoo: params, encoder MACs and codeword length for every (model, CR)."""
    from csideploy.models.stats import zoo_figures

    rows = zoo_figures(list(names) or None)
    if as_json:
        echo_json([row.as_dict() for row in rows])
        return
    header = f"{'model':<12}{'CR':>6}{'params':>12}{'encoder':>12}{'decoder':>12}"
    click.echo(header + f"{'enc MACs':>12}{'codeword':>10}  weights (NMSE built-in / COST2100)")
    for r in rows:
        click.echo(
            f"{r.name:<12}{'1/' + str(r.cr):>6}{r.params_total:>12,}{r.params_encoder:>12,}"
            f"{r.params_decoder:>12,}{r.macs_encoder:>12,}{r.codeword_length:>10}  "
            + _weights_cell(r.weights, r.nmse_builtin_db, r.nmse_cost2100_db)
        )


def _weights_cell(scenario: str | None, builtin: float | None, cost2100: float | None) -> str:
    """`indoor (-17.20 / -9.10 dB)` for shipped weights, `-` otherwise."""
    if scenario is None:
        return "-"
    figures = [f"{v:+.2f}" if v is not None else "-" for v in (builtin, cost2100)]
    return f"{scenario} ({figures[0]} / {figures[1]} dB)"


def _register_subcommands() -> None:
    """Attach the command groups that live beside their library code."""
    from csideploy.commands import register_all

    register_all(main)


_register_subcommands()


if __name__ == "__main__":
    main()
