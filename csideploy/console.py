"""What a command prints: csideploy's own lines only; other libraries' output goes to a log.

TensorFlow, absl, XNNPACK and the converters write straight to file descriptor 2 from C++,
and torch / torchao raise Python warnings, all before csideploy's own summary. Python's
`warnings` and `logging` cannot catch the C++ part, so `captured()` points fd 1 and fd 2 at a
temporary file around each noisy step and restores them afterwards. What was captured goes
to the log file (`log_path()`, overwritten by each command) and, with `-v`, is replayed on
stderr right after its step.

`step(name)` wraps one step: it prints `name ... 1.2 s` on stdout (stderr carries only the
one-line error when something fails; `--json` turns the lines off) and captures the step's
third-party output. `quiet_environment()` sets the variables
that TensorFlow reads when it loads; it runs when the CLI module is imported, before any of
those libraries.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click

QUIET_ENV = {
    # TensorFlow / LiteRT C++ logging: 2 hides INFO and WARNING (the oneDNN notice).
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # absl's "before absl::InitializeLog()" preamble goes with the level above.
    "GLOG_minloglevel": "2",
}


@dataclass
class _State:
    """Per-process console settings, set once by the CLI group."""

    verbose: bool = False
    progress: bool = False
    """Step lines on stdout: on for CLI commands, off for --json and for library calls."""
    command: str = "csideploy"
    captured_lines: int = 0
    log: Path | None = None
    started: bool = field(default=False)
    terminal: int | None = None
    """The real stdout while a step is captured (for `progress_line`)."""


_STATE = _State()


def quiet_environment() -> None:
    """Set the libraries' log levels unless the user already chose them."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def configure(*, verbose: bool, command: str | None = None, progress: bool = True) -> None:
    """Remember `-v`, whether to print steps, and the command (the log file's name)."""
    _STATE.verbose = verbose
    _STATE.progress = progress
    if command:
        _STATE.command = command
    _STATE.captured_lines = 0
    _STATE.log = None
    _STATE.started = False


def verbose() -> bool:
    return _STATE.verbose


def show_progress(enabled: bool) -> None:
    """Turn step lines off (a command printing --json) or on."""
    _STATE.progress = enabled


def log_path() -> Path:
    """Where this command's third-party output goes: the user cache, one file per command."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "csideploy" / "logs" / f"{_STATE.command}.log"


def _append_log(step: str, text: str) -> None:
    """Add one step's captured text to the log (a fresh log per command run)."""
    path = log_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = "a" if _STATE.started else "w"
        with path.open(mode, encoding="utf-8") as handle:
            handle.write(f"--- {step}\n{text}")
            if not text.endswith("\n"):
                handle.write("\n")
    except OSError:
        return
    _STATE.started = True
    _STATE.log = path


@contextlib.contextmanager
def captured(step: str, *, own_stderr: bool = False, keep: bool = True) -> Iterator[None]:
    """Send fd 1 and fd 2 (C++ and Python alike) to a temporary file for the block.

    `own_stderr`: csideploy's own progress bars (tqdm writes to `sys.stderr`) still reach
    the terminal: `sys.stderr` becomes a stream on the saved fd 2 for the block, and Python
    warnings go to the log explicitly, since they would otherwise follow `sys.stderr`.
    `keep=False` drops what was captured (a torchrun rank other than 0 writes no log).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        with contextlib.ExitStack() as stack:
            if own_stderr:
                stack.enter_context(_python_stderr_to(saved[1], sink))
            outer, _STATE.terminal = _STATE.terminal, saved[0]
            try:
                yield
            finally:
                _STATE.terminal = outer
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        sink.seek(0)
        text = sink.read().decode("utf-8", errors="replace")
    if keep:
        _record(step, text)


@contextlib.contextmanager
def _python_stderr_to(fd: int, sink: IO[bytes]) -> Iterator[None]:
    """`sys.stderr` on `fd` for the block (when it was fd 2); warnings written into `sink`."""
    original, shown = sys.stderr, warnings.showwarning
    try:
        on_fd2 = original.fileno() == 2
    except (AttributeError, OSError, ValueError):
        on_fd2 = False  # already a Python-level stream (a test runner's): leave it
    stream = open(os.dup(fd), "w", encoding="utf-8", errors="replace") if on_fd2 else None  # noqa: SIM115

    def to_sink(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
        text = warnings.formatwarning(message, category, filename, lineno, line)
        sink.write(text.encode("utf-8", errors="replace"))

    warnings.showwarning = to_sink
    if stream is not None:
        sys.stderr = stream
    try:
        yield
    finally:
        sys.stderr, warnings.showwarning = original, shown
        if stream is not None:
            stream.close()


def _record(step: str, text: str) -> None:
    """Keep what a step captured: in the log file, and on stderr with `-v`."""
    if not text.strip():
        return
    _STATE.captured_lines += text.count("\n") or 1
    _append_log(step, text)
    if _STATE.verbose:
        click.echo(text.rstrip("\n"), err=True)


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """`  name ... N.N s` on stdout around a captured step (stderr stays for errors)."""
    if _STATE.progress:
        click.echo(f"  {name:<12}...", nl=False)
    start = time.perf_counter()
    done = False
    try:
        with captured(name):
            yield
        done = True
    finally:
        if _STATE.progress:
            seconds = time.perf_counter() - start
            click.echo(f" {seconds:.1f} s" if done else " failed")


def progress_line(text: str) -> None:
    """One line of a long step's progress (a fine-tuning epoch) on the real stdout, under
    the step's own line; nothing with --json or in library calls."""
    if not _STATE.progress:
        return
    line = f"\n    {text}"
    try:
        on_fd1 = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):
        on_fd1 = False  # a Python-level stream (a test runner's): `captured` leaves it alone
    if _STATE.terminal is None or not on_fd1:
        click.echo(line, nl=False)
    else:
        os.write(_STATE.terminal, line.encode("utf-8", errors="replace"))


def log_note() -> str | None:
    """One line saying where the captured library output went, when there was any."""
    if not _STATE.captured_lines or _STATE.log is None or _STATE.verbose:
        return None
    return f"({_STATE.captured_lines} line(s) of library output in {_STATE.log}; -v shows them)"
