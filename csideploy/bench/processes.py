"""Child processes of `bench` that never outlive it, and signals that unwind instead of kill.

A benchmark starts the runner (which starts one worker per measurement) or `ssh`. Killed by
a signal's default action, Python runs no `finally` block: temporary directories stay, and
children keep running as orphans. `signals_raise` turns SIGTERM and SIGHUP into an exception
(`Interrupted`) so every `with` block unwinds, and `run_bounded` runs each child in its own
process group under a deadline and kills the whole group on a timeout or any exception.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence

from csideploy.errors import CsiDeployError

CAUGHT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(CsiDeployError):
    """A termination signal arrived; exits with 128 + the signal number, like a shell."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}; cleaned up and stopped")
        self.exit_code = 128 + signum


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def _raise(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    for number in CAUGHT_SIGNALS:
        previous[number] = signal.signal(number, _raise)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_bounded(
    command: Sequence[str],
    *,
    timeout: float,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`command` with its output captured; subprocess.TimeoutExpired after `timeout` seconds.

    The child leads a new process group; on a timeout, a signal turned exception or any
    other error the whole group (the child and anything it started) is killed and reaped.
    """
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(stdin, timeout=timeout)
    except BaseException:
        _kill_group(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=5)
