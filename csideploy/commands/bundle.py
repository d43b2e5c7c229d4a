"""`csideploy verify` and `csideploy pack`: the handset bundle commands (no torch import)."""

from __future__ import annotations

from pathlib import Path

import click

from csideploy import console
from csideploy.commands._common import echo_json, json_option


@click.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--expect-sha256",
    "expect_sha256",
    metavar="HASH",
    help="The manifest's sha256 as its producer published it (pins the whole contract).",
)
@json_option("Print the report as JSON.")
def verify_command(bundle: Path, expect_sha256: str | None, as_json: bool) -> None:
    """Check a bundle directory or tarball: schema, manifest hash, sha256 of every file, the
    declared interface against each file, golden vectors."""
    from csideploy.bench.processes import signals_raise
    from csideploy.bundle.checks import printable
    from csideploy.bundle.integrity import normalized_hash
    from csideploy.bundle.verify import verify_bundle

    pinned = normalized_hash(expect_sha256) if expect_sha256 is not None else None
    # SIGTERM / SIGHUP unwind: the extraction folder is removed
    with signals_raise(), console.captured("verify"):
        report = verify_bundle(bundle, expect_sha256=pinned)
    if as_json:
        echo_json(report.as_dict())
    else:
        for check in report.checks:
            mark = "ok  " if check.ok else "FAIL"
            click.echo(
                f"{mark} {check.check:<8} {printable(check.file)}: {printable(check.detail)}"
            )
        verdict = "verified" if report.ok else f"{len(report.failures)} check(s) failed"
        if report.manifest_sha256:
            note = "" if pinned else " (not pinned: pass --expect-sha256 with the published hash)"
            click.echo(f"manifest sha256 {report.manifest_sha256}{note}")
        click.echo(f"{printable(str(bundle))}: {verdict}")
    if not report.ok:
        raise SystemExit(1)


@click.command("pack")
@click.argument("bundle", type=click.Path(path_type=Path, file_okay=False))
@click.option("--out", type=click.Path(path_type=Path), help="Tarball path (default DIR.tar.gz).")
@json_option('Print {"tarball": PATH} as JSON.')
def pack_command(bundle: Path, out: Path | None, as_json: bool) -> None:
    """Write a reproducible DIR.tar.gz with the UE side only (no BS decoder)."""
    from csideploy.bundle.checks import printable
    from csideploy.bundle.pack import pack_bundle

    tarball = pack_bundle(bundle, out=out)
    if as_json:
        echo_json({"tarball": str(tarball)})
    else:
        click.echo(printable(str(tarball)))


def register(group: click.Group) -> None:
    group.add_command(verify_command)
    group.add_command(pack_command)
