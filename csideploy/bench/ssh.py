"""The ssh target: copy the runner and artifacts to a board, run there, bring the JSON back.

The artifacts and the runner are streamed to a fresh temporary directory on the host (``tar``
through ``ssh``), run with the host's ``python3`` (or `python`), the JSON (and saved outputs)
come back, and the directory is removed even when the run fails. The system ``ssh`` is used
with ``BatchMode=yes`` and ``StrictHostKeyChecking=accept-new`` against a known-hosts file in a
private temporary directory, so no prompt can hang and the user's own known-hosts file is
left alone. Options given with `--ssh-option` come first, and ssh keeps the first value of
each option, so a user can pin the board's host key (``StrictHostKeyChecking=yes`` and
``UserKnownHostsFile=~/.ssh/known_hosts``).

Every step is bounded: ``ConnectTimeout`` for the TCP connection and the server's banner,
``ServerAliveInterval`` / ``ServerAliveCountMax`` for a link that dies later, and an overall
deadline per ssh process that also covers a server that stalls during key exchange (which no
ssh option bounds). Each ssh runs in its own process group and is killed with it on a
deadline, an error or a signal (`csideploy.bench.processes`), so none is left behind.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csideploy.bench.processes import run_bounded
from csideploy.bench.remote import (
    RUNNER_PATH,
    RemoteError,
    RunnerJob,
    decoded,
    localize,
    parse_output,
    runner_failed,
)
from csideploy.errors import CsiDeployError, MissingDependencyError

_SSH_URL = re.compile(
    r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/@]+)(?::(?P<port>\d+))?/?$"
)
ALIVE_INTERVAL_S = 5
ALIVE_COUNT = 3


@dataclass(frozen=True)
class SshTarget:
    """``ssh://user@host[:port]`` plus how to log in and which Python to run there.

    `step_timeout_s` bounds each ssh process other than the timed run itself (connecting,
    key exchange, copying, fetching, cleaning up); `connect_timeout_s` is ssh's own
    ConnectTimeout, never longer than a step.
    """

    host: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    options: tuple[str, ...] = ()
    python: str = "python3"
    connect_timeout_s: int = 15
    step_timeout_s: float = 120.0

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        identity: str | os.PathLike[str] | None = None,
        options: Sequence[str] = (),
        python: str = "python3",
        step_timeout_s: float = 120.0,
    ) -> SshTarget:
        match = _SSH_URL.match(url)
        if not match:
            raise CsiDeployError(
                f"target {url!r} is not ssh://[user@]host[:port] (nor 'local' or qemu:ROOT)"
            )
        port = int(match["port"]) if match["port"] else None
        if port is not None and not 0 < port < 65536:
            raise CsiDeployError(f"target {url!r}: port {port} is out of range")
        if identity is not None and not Path(identity).is_file():
            raise CsiDeployError(f"--identity {identity}: no such file")
        if not step_timeout_s > 0:
            raise CsiDeployError(f"--ssh-timeout must be > 0 seconds, got {step_timeout_s}")
        return cls(
            host=match["host"].strip("[]"),
            user=match["user"],
            port=port,
            identity=Path(identity) if identity else None,
            options=tuple(options),
            python=python,
            connect_timeout_s=max(1, min(15, int(step_timeout_s))),
            step_timeout_s=float(step_timeout_s),
        )

    @property
    def url(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


@dataclass
class _SshSession:
    """ssh command lines for one target, with a private known-hosts file."""

    target: SshTarget
    workdir: Path
    base: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if shutil.which("ssh") is None:
            raise MissingDependencyError("an ssh target needs the OpenSSH client ('ssh')")
        base = ["ssh"]
        for option in self.target.options:  # ssh keeps the first value given: the user's win
            base += ["-o", option]
        for option in (
            "BatchMode=yes",
            "StrictHostKeyChecking=accept-new",
            f"UserKnownHostsFile={self.workdir / 'known_hosts'}",
            f"ConnectTimeout={self.target.connect_timeout_s}",
            f"ServerAliveInterval={ALIVE_INTERVAL_S}",
            f"ServerAliveCountMax={ALIVE_COUNT}",
            "LogLevel=ERROR",
        ):
            base += ["-o", option]
        if self.target.port:
            base += ["-p", str(self.target.port)]
        if self.target.identity:
            base += ["-i", str(self.target.identity), "-o", "IdentitiesOnly=yes"]
        self.base = [*base, "--", self.target.destination]

    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        step: str,
        timeout: float | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """`command` on the target; RemoteError naming `step` on a timeout (the target's step
        bound unless given), or on a non-zero exit when `check`."""
        limit = self.target.step_timeout_s if timeout is None else timeout
        try:
            done = run_bounded([*self.base, command], stdin=stdin, timeout=limit)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.target.url}: {step} timed out after {limit:g} s") from None
        if check and done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            raise RemoteError(
                f"{self.target.url}: {step} failed (ssh exit {done.returncode}): "
                + (" | ".join(lines[-3:]) or "no message")
            )
        return done


def _stage_tar(job: RunnerJob) -> bytes:
    """A tar of runner.py, artifacts/<names> and inputs.npy, as the remote folder will hold."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(RUNNER_PATH, arcname="runner.py")
        for path, name in job.staged_names():
            archive.add(path, arcname=f"artifacts/{name}")
        if job.inputs:
            archive.add(job.inputs, arcname="inputs.npy")
    return buffer.getvalue()


def run_ssh(job: RunnerJob, target: SshTarget) -> dict[str, Any]:
    """Copy, run and clean up on `target`; the document gains `target` and local paths."""
    with tempfile.TemporaryDirectory(prefix="csideploy-ssh-") as workdir:
        session = _SshSession(target, Path(workdir))
        made = session.run(
            'mktemp -d "${TMPDIR:-/tmp}/csideploy-bench.XXXXXX"', step="creating a temp dir"
        )
        remote = made.stdout.decode(errors="replace").strip()
        if not remote.startswith("/"):
            raise RemoteError(f"{target.url}: mktemp returned {remote[:80]!r}, not a directory")
        quoted = shlex.quote(remote)
        try:
            document = _copy_and_run(session, job, remote)
        except BaseException:
            _remove_quietly(session, quoted)
            raise
        session.run(f"rm -rf -- {quoted}", step="removing the temp dir")
    return localize(document, job, {"kind": "ssh", "url": target.url, "python": target.python})


def _copy_and_run(session: _SshSession, job: RunnerJob, remote: str) -> dict[str, Any]:
    """Stage the files in `remote`, run the runner there, fetch saved outputs."""
    target, quoted = session.target, shlex.quote(remote)
    session.run(f"tar -xf - -C {quoted}", stdin=_stage_tar(job), step="copying files")
    command = [target.python, f"{remote}/runner.py", "--artifacts", f"{remote}/artifacts"]
    command += job.options()
    if job.inputs:
        command += ["--inputs", f"{remote}/inputs.npy"]
    if job.save_outputs:
        command += ["--save-outputs", f"{remote}/outputs"]
    runner_line = " ".join(shlex.quote(part) for part in command)
    done = session.run(
        runner_line, step="running the runner", timeout=job.overall_timeout_s(), check=False
    )
    if done.returncode != 0:
        raise runner_failed(target.url, decoded(done))
    document = parse_output(done.stdout.decode(errors="replace"), target.url)
    if job.save_outputs:
        fetched = session.run(f"tar -cf - -C {quoted}/outputs .", step="fetching saved outputs")
        _extract(fetched.stdout, job.save_outputs)
    return document


def _remove_quietly(session: _SshSession, quoted: str) -> None:
    """Remove the remote directory after a failure without hiding that failure."""
    with contextlib.suppress(RemoteError):
        session.run(f"rm -rf -- {quoted}", step="removing the temp dir")


def _extract(data: bytes, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        archive.extractall(destination, filter="data")
