"""`csideploy bench` (latency, memory, size) and `csideploy report` (report.md / report.html)."""

from __future__ import annotations

from pathlib import Path

import click

from csideploy import console
from csideploy.commands._common import echo_json, json_option
from csideploy.errors import CsiDeployError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError as error:
        raise CsiDeployError(f"--threads must be a comma list of integers, got {text!r}") from error
    if not values:
        raise CsiDeployError("--threads is empty")
    return values


@click.command("bench")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--runtime",
    "runtimes",
    default="auto",
    show_default=True,
    help="Comma list of onnxruntime, litert, executorch, torch (auto: each file with its own"
    " runtime).",
)
@click.option("--threads", default="1", show_default=True, help="Thread counts, e.g. 1,2,4.")
@click.option("--batch", default=1, show_default=True, type=int)
@click.option("--warmup", default=20, show_default=True, type=int, help="Untimed runs first.")
@click.option("--runs", default=200, show_default=True, type=int, help="Timed runs.")
@click.option(
    "--target",
    default="local",
    show_default=True,
    help="local, ssh://user@host[:port], or qemu:ROOT (an arm64 root; outputs only).",
)
@click.option("--identity", type=click.Path(path_type=Path), help="ssh private key file.")
@click.option("--ssh-option", "ssh_options", multiple=True, help="Extra ssh -o option.")
@click.option(
    "--remote-python", default="python3", show_default=True, help="Python on the ssh target."
)
@click.option(
    "--ssh-timeout",
    default=120.0,
    show_default=True,
    type=float,
    help="Seconds each ssh step may take (connect, key exchange, copy, clean-up).",
)
@click.option("--inputs", type=click.Path(path_type=Path), help="An (N, ...) .npy input array.")
@click.option(
    "--save-outputs", type=click.Path(path_type=Path), help="Save each file's outputs here."
)
@click.option("--include-decoder", is_flag=True, help="Also time the BS-side decoder files.")
@click.option("--no-roofline", is_flag=True, help="Skip the peak / bandwidth micro-benchmark.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Where perf.json goes.")
@json_option("Print the perf document as JSON.")
def bench_command(
    path: Path,
    runtimes: str,
    threads: str,
    batch: int,
    warmup: int,
    runs: int,
    target: str,
    identity: Path | None,
    ssh_options: tuple[str, ...],
    remote_python: str,
    ssh_timeout: float,
    inputs: Path | None,
    save_outputs: Path | None,
    include_decoder: bool,
    no_roofline: bool,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """Latency, init time, peak RSS and size of every artifact in PATH.

    PATH is an artifact directory or bundle from `csideploy export`, or one .onnx / .tflite / .pte
    file. A bundle is verified first (and never rewritten). Writes perf.json and the latency
    section of report.md; nothing when nothing could be measured.
    """
    from csideploy.bench import BenchConfig, run_bench
    from csideploy.bench.processes import signals_raise

    config = BenchConfig(
        runtimes=tuple(r.strip() for r in runtimes.split(",") if r.strip()),
        threads=_int_list(threads),
        batch=batch,
        warmup=warmup,
        runs=runs,
        target=target,
        identity=str(identity) if identity else None,
        ssh_options=ssh_options,
        remote_python=remote_python,
        include_decoder=include_decoder,
        inputs=inputs,
        save_outputs=save_outputs,
        roofline=not no_roofline,
        ssh_timeout_s=ssh_timeout,
    )
    with signals_raise(), console.captured("bench", own_stderr=True):
        result = run_bench(path, config, out_dir=out_dir)
    if as_json:
        echo_json(result.perf)
        return
    perf = result.perf
    machine = perf["machine"]
    click.echo(
        f"{machine['cpu_model']}, {machine['cores']} cores, {machine['machine']}"
        + ("  [EMULATED: timings are not latency]" if perf.get("emulated") else "")
    )
    click.echo(
        f"{'artifact':<28}{'runtime':<13}{'thr':>4}{'p50 us':>10}{'p99 us':>10}"
        f"{'bytes':>10}{'p50/floor':>10}"
    )
    for row in result.rows():
        if row["status"] != "ok":
            click.echo(
                f"{row['artifact']:<28}{row['runtime']:<13}{row['threads']:>4}  "
                f"{row['status']}: {row['reason']}"
            )
            continue
        ratio = f"{row['p50_over_floor']:.1f}x" if row["p50_over_floor"] else "-"
        click.echo(
            f"{row['artifact']:<28}{row['runtime']:<13}{row['threads']:>4}"
            f"{row['p50_us']:>10.1f}{row['p99_us']:>10.1f}{row['bytes'] or 0:>10,}{ratio:>10}"
        )
    click.echo(f"wrote {result.perf_path} and {result.report_path}")


@click.command("report")
@click.argument("directories", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), help="Output folder (several DIRs)."
)
@json_option("Print the written paths as JSON.")
def report_command(directories: tuple[Path, ...], out_dir: Path | None, as_json: bool) -> None:
    """Render report.html and report.md (tables and plots) for one or more artifact DIRs."""
    from csideploy.report import render_report

    files = render_report(list(directories), out_dir)
    if as_json:
        echo_json(files.as_dict())
        return
    for directory, ship in zip(directories, files.ship, strict=True):
        where = f" ({directory})" if len(directories) > 1 else ""
        click.echo(f"ship{where}: {ship or 'nothing (no UE encoder passed its gates)'}")
    click.echo(f"wrote {files.html}, {files.markdown} and {len(files.plots)} plot(s)")
    for problem in files.problems:
        click.echo(f"note: {problem}", err=True)


def register(group: click.Group) -> None:
    group.add_command(bench_command)
    group.add_command(report_command)
