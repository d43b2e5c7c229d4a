"""Where the runner runs: here, on an ssh target, or in an emulated aarch64 root.

Every target runs the same standalone `runner.py` with the target's own Python and returns
its JSON document, so the timing method is one and the machine recorded is the one that ran
the files.

- ``local``: this interpreter, in a subprocess.
- ``ssh://user@host[:port]``: the artifacts and the runner are streamed to a fresh temporary
  directory on the host (``tar`` through ``ssh``), run with the host's ``python3`` (or
  `remote_python`), the JSON (and saved outputs) come back, and the directory is removed even
  when the run fails. The system ``ssh`` is used with ``BatchMode=yes`` and
  ``StrictHostKeyChecking=accept-new`` against a known-hosts file in a private temporary
  directory, so no prompt can hang and the user's own known-hosts file is left alone.
- ``qemu:ROOT``: an arm64 root built by ``.ci/setup_arm64_root.sh``, run with
  ``qemu-aarch64-static -L ROOT``. There are no child processes under qemu-user without
  binfmt, so the runner measures in-process; the results are marked emulated and their
  timings are not latency.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csideploy.errors import CsiDeployError, MissingDependencyError

RUNNER_PATH = Path(__file__).with_name("runner.py")
_SSH_URL = re.compile(
    r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]]+\]|[^:/@]+)(?::(?P<port>\d+))?/?$"
)
QEMU_BINARY = "qemu-aarch64-static"
QEMU_CPU = "neoverse-n1"
"""The emulated core: it matches the root's proc/cpuinfo (CPU part 0xd0c, an ARMv8.2 core with
dot product, like the big cores of 2019-2021 phones). qemu 7.2's default `max` core adds SME,
under which XNNPACK's int8 kernels return wrong outputs (see docs/benchmarks.md)."""
ROOT_SITE_PACKAGES = "/opt/csideploy/site-packages"
"""Where `.ci/setup_arm64_root.sh` installs the aarch64 wheels inside the root."""


class RemoteError(CsiDeployError):
    """A target that could not be reached or whose runner failed (names the step)."""


@dataclass(frozen=True)
class RunnerJob:
    """What to ask the runner: everything but the files is a runner command-line option."""

    files: tuple[Path, ...]
    root: Path | None
    manifest: Path | None = None
    runtimes: tuple[str, ...] = ("auto",)
    threads: tuple[int, ...] = (1,)
    batch: int = 1
    warmup: int = 20
    runs: int = 200
    inputs: Path | None = None
    save_outputs: Path | None = None
    include_decoder: bool = False
    roofline: bool = True
    timeout_s: float = 600.0

    def options(self) -> list[str]:
        """Runner options other than --artifacts, --inputs and --save-outputs."""
        args = [
            "--runtime",
            ",".join(self.runtimes),
            "--threads",
            ",".join(str(t) for t in self.threads),
            "--batch",
            str(self.batch),
            "--warmup",
            str(self.warmup),
            "--runs",
            str(self.runs),
            "--timeout",
            str(self.timeout_s),
        ]
        if self.include_decoder:
            args.append("--include-decoder")
        if not self.roofline:
            args.append("--no-roofline")
        return args

    def staged_names(self) -> list[tuple[Path, str]]:
        """(local file, name inside the staged artifact folder) for every file to copy."""
        pairs = []
        for path in self.files:
            name = path.relative_to(self.root).as_posix() if self.root else path.name
            pairs.append((path, name))
        if self.manifest is not None:
            pairs.append((self.manifest, "manifest.json"))
        return pairs

    def local_files(self) -> list[str]:
        """--artifacts (and --manifest for loose files) for a runner that sees local paths."""
        if self.root:
            return ["--artifacts", str(self.root)]
        args = ["--artifacts", *[str(p) for p in self.files]]
        return [*args, "--manifest", str(self.manifest)] if self.manifest else args


def parse_output(stdout: str, where: str) -> dict[str, Any]:
    """The runner's JSON document from its stdout, or RemoteError saying what came back."""
    start = stdout.find("{")
    try:
        document = json.loads(stdout[start:]) if start >= 0 else None
    except ValueError:
        document = None
    if not isinstance(document, dict) or "results" not in document:
        snippet = stdout.strip().splitlines()[-1:] or ["nothing"]
        raise RemoteError(f"{where}: the runner printed no perf document ({snippet[0][:200]})")
    return document


def _runner_failed(where: str, done: subprocess.CompletedProcess[str]) -> RemoteError:
    lines = (done.stderr or "").strip().splitlines()
    message = next((line for line in reversed(lines) if line.startswith("error:")), None)
    message = message or " | ".join(lines[-3:]) or f"exit code {done.returncode}"
    return RemoteError(f"{where}: runner failed: {message.removeprefix('error: ')}")


# --------------------------------------------------------------------------- local


def run_local(job: RunnerJob, python: str | None = None) -> dict[str, Any]:
    """Run the runner with this (or the given) interpreter in a subprocess."""
    command = [python or sys.executable, str(RUNNER_PATH), *job.local_files(), *job.options()]
    if job.inputs:
        command += ["--inputs", str(job.inputs)]
    if job.save_outputs:
        command += ["--save-outputs", str(job.save_outputs)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise _runner_failed("local", done)
    return parse_output(done.stdout, "local")


# --------------------------------------------------------------------------- ssh


@dataclass(frozen=True)
class SshTarget:
    """``ssh://user@host[:port]`` plus how to log in and which Python to run there."""

    host: str
    user: str | None = None
    port: int | None = None
    identity: Path | None = None
    options: tuple[str, ...] = ()
    python: str = "python3"
    connect_timeout_s: int = 15

    @classmethod
    def parse(
        cls,
        url: str,
        *,
        identity: str | os.PathLike[str] | None = None,
        options: Sequence[str] = (),
        python: str = "python3",
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
        return cls(
            host=match["host"].strip("[]"),
            user=match["user"],
            port=port,
            identity=Path(identity) if identity else None,
            options=tuple(options),
            python=python,
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
        base = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={self.workdir / 'known_hosts'}",
            "-o",
            f"ConnectTimeout={self.target.connect_timeout_s}",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.target.port:
            base += ["-p", str(self.target.port)]
        if self.target.identity:
            base += ["-i", str(self.target.identity), "-o", "IdentitiesOnly=yes"]
        for option in self.target.options:
            base += ["-o", option]
        self.base = [*base, "--", self.target.destination]

    def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        step: str,
        timeout: float = 600.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """`command` on the target; RemoteError naming `step` on a timeout, or on a non-zero
        exit when `check`."""
        try:
            done = subprocess.run(
                [*self.base, command], input=stdin, capture_output=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as error:
            raise RemoteError(
                f"{self.target.url}: {step} timed out after {timeout:.0f} s"
            ) from error
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
        remote = made.stdout.decode().strip()
        if not remote.startswith("/"):
            raise RemoteError(f"{target.url}: mktemp returned {remote!r}, not a directory")
        quoted = shlex.quote(remote)
        try:
            session.run(f"tar -xf - -C {quoted}", stdin=_stage_tar(job), step="copying files")
            command = [
                target.python,
                f"{remote}/runner.py",
                "--artifacts",
                f"{remote}/artifacts",
                *job.options(),
            ]
            if job.inputs:
                command += ["--inputs", f"{remote}/inputs.npy"]
            if job.save_outputs:
                command += ["--save-outputs", f"{remote}/outputs"]
            runner_line = " ".join(shlex.quote(part) for part in command)
            done = session.run(
                runner_line, step="running the runner", timeout=job.timeout_s * 10, check=False
            )
            if done.returncode != 0:
                raise _runner_failed(
                    target.url,
                    subprocess.CompletedProcess(
                        done.args, done.returncode, "", done.stderr.decode(errors="replace")
                    ),
                )
            document = parse_output(done.stdout.decode(errors="replace"), target.url)
            if job.save_outputs:
                fetched = session.run(
                    f"tar -cf - -C {quoted}/outputs .", step="fetching saved outputs"
                )
                _extract(fetched.stdout, job.save_outputs)
        except BaseException:
            _remove_quietly(session, quoted)
            raise
        session.run(f"rm -rf -- {quoted}", step="removing the temp dir", timeout=60)
    return _localize(document, job, {"kind": "ssh", "url": target.url, "python": target.python})


def _remove_quietly(session: _SshSession, quoted: str) -> None:
    """Remove the remote directory after a failure without hiding that failure."""
    with contextlib.suppress(RemoteError):
        session.run(f"rm -rf -- {quoted}", step="removing the temp dir", timeout=60)


def _extract(data: bytes, destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        archive.extractall(destination, filter="data")


def _localize(document: dict[str, Any], job: RunnerJob, target: dict[str, Any]) -> dict[str, Any]:
    """Point artifact paths back at the local files and record the target."""
    local = {name: str(path) for path, name in job.staged_names()}
    for entry in document.get("artifacts", []):
        entry["path"] = local.get(entry.get("name"), entry.get("path"))
    document["target"] = target
    return document


# --------------------------------------------------------------------------- qemu


def arm64_root_ready(root: Path) -> str | None:
    """None when `root` can run the runner under qemu, else what is missing."""
    if shutil.which(QEMU_BINARY) is None:
        return f"{QEMU_BINARY} not found (Debian package qemu-user-static)"
    for needed in ("usr/bin/python3", "proc/cpuinfo", ROOT_SITE_PACKAGES.lstrip("/")):
        if not (root / needed).exists():
            return f"{root}: missing {needed} (build it with .ci/setup_arm64_root.sh {root})"
    return None


def _root_python(root: Path) -> Path:
    """The root's python3 as a host path, following links inside the root (not the host)."""
    path = root / "usr/bin/python3"
    for _ in range(8):
        if not path.is_symlink():
            return path
        link = Path(os.readlink(path))
        path = root / link.relative_to("/") if link.is_absolute() else path.parent / link
    return path


def run_qemu(job: RunnerJob, root: Path) -> dict[str, Any]:
    """Run the runner under `qemu-aarch64-static -L root` with the root's python3.

    qemu-user resolves every absolute path under `root` first, so the root's fake
    `proc/cpuinfo` (aarch64-shaped) replaces the host's x86 one: onnxruntime's CPU detection
    segfaults on the host's file.
    """
    missing = arm64_root_ready(root)
    if missing:
        raise RemoteError(f"qemu target: {missing}")
    cpu = os.environ.get("CSIDEPLOY_QEMU_CPU", QEMU_CPU)
    command = [
        QEMU_BINARY,
        "-cpu",
        cpu,
        "-L",
        str(root),
        str(_root_python(root)),
        str(RUNNER_PATH),
        *job.local_files(),
        *job.options(),
        "--isolation",
        "inprocess",
        "--emulated",
        "--no-roofline",
    ]
    if job.inputs:
        command += ["--inputs", str(job.inputs)]
    if job.save_outputs:
        command += ["--save-outputs", str(job.save_outputs)]
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": ROOT_SITE_PACKAGES,
        "PYTHONNOUSERSITE": "1",
        "HOME": os.environ.get("HOME", "/tmp"),
        "CSIDEPLOY_EMULATED": "qemu-user",
    }
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=job.timeout_s * 10, check=False
    )
    if done.returncode != 0:
        raise _runner_failed("qemu", done)
    document = parse_output(done.stdout, "qemu")
    document["target"] = {"kind": "qemu", "root": str(root), "emulator": QEMU_BINARY, "cpu": cpu}
    return document
