"""A real two-node Ray cluster on loopback for the tests: a head and one worker node, each a
`ray start --block` process in its own session, stopped by signalling exactly those
sessions (never `ray stop`, which would stop every Ray runtime of this user)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OBJECT_STORE_BYTES = 100_000_000
STARTUP_TIMEOUT_S = 90.0


def free_ports(count: int) -> list[int]:
    """`count` distinct ports the OS says are free on loopback now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LoopbackRayCluster:
    """Start with `start()`, join at `address`, stop with `stop()` (idempotent)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="csd-ray-", dir="/tmp"))  # short: unix sockets
        self.env = {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.address = ""

    def _node(self, head: bool, port: int) -> subprocess.Popen[bytes]:
        ports = free_ports(7)
        low = random.randrange(10002, 19800)  # Ray's own worker-port range, off the ephemeral one
        args = [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--block",
            "--num-cpus=1",
            "--node-ip-address=127.0.0.1",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--object-manager-port={ports[0]}",
            f"--node-manager-port={ports[1]}",
            f"--dashboard-agent-listen-port={ports[2]}",
            f"--dashboard-agent-grpc-port={ports[3]}",
            f"--runtime-env-agent-port={ports[4]}",
            f"--metrics-export-port={ports[5]}",
            f"--min-worker-port={low}",
            f"--max-worker-port={low + 200}",
            "--disable-usage-stats",
        ]
        if head:
            args += [
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--dashboard-port={ports[6]}",
                f"--temp-dir={self.temp}",
            ]
        else:
            args += [f"--address=127.0.0.1:{port}"]
        log = open(self.temp / ("head.log" if head else "worker.log"), "wb")  # noqa: SIM115
        return subprocess.Popen(
            args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start(self) -> str:
        port = free_ports(1)[0]
        self.processes.append(self._node(True, port))
        self.address = f"127.0.0.1:{port}"
        self._wait_for_nodes(1)
        self.processes.append(self._node(False, port))
        self._wait_for_nodes(2)
        return self.address

    def _wait_for_nodes(self, count: int) -> None:
        """Poll `ray.nodes()` from a subprocess until `count` nodes are alive."""
        probe = (
            "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, "
            "logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"ray start exited: {self._log_tail()}")
            if not _listening(self.address):
                time.sleep(0.5)
                continue
            run = subprocess.run(
                [sys.executable, "-c", probe, self.address],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            alive = run.stdout.strip()
            if run.returncode == 0 and alive.isdigit() and int(alive) >= count:
                return
            time.sleep(1.0)
        raise RuntimeError(f"Ray cluster did not reach {count} node(s): {self._log_tail()}")

    def _log_tail(self) -> str:
        """The last lines of each node's `ray start` output (the temp dir goes at stop)."""
        tails = []
        for log in sorted(self.temp.glob("*.log")):
            lines = log.read_text(errors="replace").strip().splitlines()[-6:]
            tails.append(f"{log.name}: " + " | ".join(lines))
        return "; ".join(tails) or "no output"

    def stop(self) -> None:
        """Signal every process of the sessions this object started (Ray's workers start
        their own process groups, but stay in the session), then remove the temp dir."""
        sessions = {p.pid for p in self.processes}
        _signal_sessions(sessions, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while _members(sessions) and time.monotonic() < deadline:
            time.sleep(0.2)
        _signal_sessions(sessions, signal.SIGKILL)
        for process in self.processes:
            process.wait(timeout=10)
        self.processes.clear()
        shutil.rmtree(self.temp, ignore_errors=True)


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _members(sessions: set[int]) -> list[int]:
    """Live processes whose session id is one of `sessions` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields and fields[0] != "Z" and int(fields[3]) in sessions:
            found.append(int(stat.parent.name))
    return found


def _signal_sessions(sessions: set[int], sig: int) -> None:
    for pid in _members(sessions):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
