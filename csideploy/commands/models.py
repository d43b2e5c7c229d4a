"""`csideploy models`: the zoo, with params, MACs, codeword length and shipped weights."""

from __future__ import annotations

import click

from csideploy.commands._common import echo_json, json_option


@click.command("models")
@json_option("Print JSON instead of a table.")
@click.option("--model", "names", multiple=True, help="Only these models (repeatable).")
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


def register(group: click.Group) -> None:
    group.add_command(models_command)
