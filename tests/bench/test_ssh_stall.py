"""An ssh target that sends its banner and then stalls: every step is bounded, and SIGTERM
leaves no temporary directory and no ssh behind (issue 15, item 9).

The target is a real loopback TCP listener that answers like an SSH server's first line and
then never speaks again (so key exchange never completes).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from csideploy.bench import BenchConfig, RemoteError, run_bench

BANNER = b"SSH-2.0-OpenSSH_9.6 stalls-after-banner\r\n"


@dataclass
class Staller:
    port: int
    connections: list[socket.socket] = field(default_factory=list)

    def wait_for_client(self, seconds: float = 60.0) -> socket.socket:
        deadline = time.monotonic() + seconds
        while not self.connections:
            assert time.monotonic() < deadline, "ssh never connected"
            time.sleep(0.05)
        return self.connections[0]


@pytest.fixture()
def staller() -> Iterator[Staller]:
    """Accept, send the banner, never answer the key exchange."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    state = Staller(server.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            connection.sendall(BANNER)
            state.connections.append(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in state.connections:
            connection.close()
        server.close()


def _closed_by_peer(connection: socket.socket, seconds: float = 20.0) -> bool:
    """Whether the client end closed (its ssh process is gone): EOF after what it sent."""
    connection.settimeout(seconds)
    try:
        while connection.recv(65536):
            pass
    except (TimeoutError, OSError):
        return False
    return True


def _ssh_processes(port: int) -> list[int]:
    """Live processes whose command line is an ssh to this port."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ssh") and str(port).encode() in argv:
            found.append(int(entry.name))
    return found


def test_stalled_key_exchange_is_bounded(staller: Staller, workdir: Path, private_tmp: Path):
    config = BenchConfig(
        target=f"ssh://nobody@127.0.0.1:{staller.port}",
        ssh_timeout_s=3,
        runs=1,
        warmup=0,
        roofline=False,
    )
    with pytest.raises(RemoteError, match=r"creating a temp dir timed out after 3 s"):
        run_bench(workdir, config, write=False)
    assert _closed_by_peer(staller.wait_for_client())
    assert _ssh_processes(staller.port) == []
    assert list(private_tmp.iterdir()) == []  # the private known-hosts folder is gone


_CLI = "import sys; from csideploy.cli import main; sys.argv[0] = 'csideploy'; main()"


def test_sigterm_cleans_up_the_temp_dir_and_the_ssh_child(
    staller: Staller, workdir: Path, tmp_path: Path
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-c", _CLI, "bench", str(workdir), "--no-roofline"]
    command += ["--target", f"ssh://nobody@127.0.0.1:{staller.port}", "--runs", "1"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        connection = staller.wait_for_client()
        assert [p.name.startswith("csideploy-ssh-") for p in scratch.iterdir()] == [True]
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert err.splitlines()[-1] == "error: interrupted by SIGTERM; cleaned up and stopped"
    assert _closed_by_peer(connection)
    assert _ssh_processes(staller.port) == []
    assert list(scratch.iterdir()) == []
    assert not (workdir / "perf.json").exists()


def test_user_ssh_options_win_so_a_host_key_can_be_pinned(sshd, workdir: Path) -> None:
    config = BenchConfig(
        target=sshd.url,
        identity=str(sshd.identity),
        ssh_options=("StrictHostKeyChecking=yes",),  # the private known-hosts file is empty
        runs=1,
        warmup=0,
        roofline=False,
    )
    with pytest.raises(RemoteError, match="Host key verification failed"):
        run_bench(workdir, config, write=False)
