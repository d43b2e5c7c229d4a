"""Fixtures of the bench tests: real artifacts (built once), a loopback sshd, an arm64 root."""

from __future__ import annotations

import getpass
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_helpers():
    spec = importlib.util.spec_from_file_location(
        "csideploy_test_bench_artifacts", Path(__file__).with_name("_bench_artifacts.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _load_helpers()


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared, read-only artifact directory (copy it before writing into it)."""
    return helpers.build_artifacts(tmp_path_factory.getbasetemp() / "bench-artifacts")


@pytest.fixture(scope="session")
def golden(artifact_dir: Path) -> Path:
    return artifact_dir.parent / "golden.npy"


@pytest.fixture(scope="session")
def perf_schema() -> dict:
    """JSON schema of the perf document (csideploy.perf/1) every runner path must meet."""
    return helpers.PERF_SCHEMA


@pytest.fixture
def workdir(artifact_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the artifact directory."""
    return helpers.copy_without_marker(artifact_dir, tmp_path / artifact_dir.name)


# --------------------------------------------------------------------------- sshd


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    identity: Path

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _ensure_sshd() -> None:
    """Install OpenSSH with .ci/setup_sshd.sh when missing; skip only if it cannot be."""
    if Path("/usr/sbin/sshd").is_file() and shutil.which("ssh") and shutil.which("ssh-keygen"):
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        return
    done = subprocess.run(
        ["bash", str(REPO / ".ci/setup_sshd.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode == 3:
        pytest.skip(f"OpenSSH server cannot be installed here: {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """A real OpenSSH server on 127.0.0.1 with throwaway host and client keys."""
    _ensure_sshd()
    folder = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / key)], check=True
        )
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                "ListenAddress 127.0.0.1",
                f"HostKey {folder / 'host_key'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                f"PidFile {folder / 'sshd.pid'}",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    log = (folder / "sshd.log").open("w")
    server = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config), "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"sshd exited: {(folder / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        server.terminate()
        pytest.fail("sshd did not start listening within 15 s")
    try:
        yield Sshd(port=port, user=getpass.getuser(), identity=folder / "client_key")
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


# --------------------------------------------------------------------------- arm64 root


def arm64_root_path() -> Path:
    for variable in ("CSIDEPLOY_ARM64_ROOT", "ARM64_ROOT"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path.home() / ".cache/csideploy/arm64-root"


@pytest.fixture(scope="session")
def arm64_root() -> Path:
    """The arm64 root of .ci/setup_arm64_root.sh (a no-op when CI already built it)."""
    root = arm64_root_path()
    done = subprocess.run(
        ["bash", str(REPO / ".ci/setup_arm64_root.sh"), str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        timeout=900,
        check=False,
    )
    if done.returncode == 3:
        pytest.skip(f"arm64 root cannot be built here: {done.stdout.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root
