"""Where the runner runs: here, on an ssh target, or in an emulated aarch64 root.

Every target runs the same standalone `runner.py` with the target's own Python and returns
its JSON document, so the timing method is one and the machine recorded is the one that ran
the files.

- ``local``: this interpreter, in a subprocess.
- ``ssh://user@host[:port]``: see `csideploy.bench.ssh` (every step bounded, cleaned up).
- ``qemu:ROOT``: an arm64 root built by ``.ci/setup_arm64_root.sh``, run with
  ``qemu-aarch64-static -L ROOT``. There are no child processes under qemu-user without
  binfmt, so the runner measures in-process; the results are marked emulated and their
  timings are not latency.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csideploy import runner
from csideploy.bench.processes import run_bounded
from csideploy.errors import CsiDeployError

RUNNER_PATH = Path(runner.__file__)
"""The standalone runner, run as it is on every target and shipped in bundles as runner.py."""
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

    def overall_timeout_s(self) -> float:
        """The runner's whole run: every measurement's own bound, plus the roofline probe."""
        runtimes = max(1, len(self.runtimes))
        return self.timeout_s * (len(self.files) * len(self.threads) * runtimes + 2)

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


def runner_failed(where: str, done: subprocess.CompletedProcess[str]) -> RemoteError:
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
    try:
        done = decoded(run_bounded(command, timeout=job.overall_timeout_s()))
    except subprocess.TimeoutExpired as error:
        raise RemoteError(f"local: the runner timed out after {error.timeout:.0f} s") from None
    if done.returncode != 0:
        raise runner_failed("local", done)
    return parse_output(done.stdout, "local")


def decoded(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    """A finished process with its output as text."""
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"),
    )


def localize(document: dict[str, Any], job: RunnerJob, target: dict[str, Any]) -> dict[str, Any]:
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
        raise runner_failed("qemu", done)
    document = parse_output(done.stdout, "qemu")
    document["target"] = {"kind": "qemu", "root": str(root), "emulator": QEMU_BINARY, "cpu": cpu}
    return document
