"""Start or join a Ray runtime for `--workers N` / `--ray-address ADDR`.

Ray is an optional extra (`csideploy[cluster]`) and is imported only here. A local runtime
listens on loopback only, starts no dashboard and sends no usage statistics; joining a
cluster uses whatever the cluster's head offers (`ray start --head` on that machine).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from csideploy.errors import CsiDeployError, MissingDependencyError

LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024
"""Object store of a local runtime: shard results pass through it one at a time."""
PROBE_TIMEOUT_S = 5.0
"""How long joining waits for the head's port to answer (Ray itself retries for minutes)."""


def import_ray() -> Any:
    """The `ray` module, or a MissingDependencyError naming the extra to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # workers use this interpreter
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            "--workers / --ray-address need Ray: pip install 'csideploy[cluster]'"
        ) from None
    return ray


def check_choice(workers: int | None, address: str | None) -> None:
    """A CsiDeployError when both are given or `workers` is below 1 (they exclude each other)."""
    if workers is not None and address is not None:
        raise CsiDeployError(
            "--workers starts a local Ray runtime, --ray-address joins one: pick one"
        )
    if workers is not None and workers < 1:
        raise CsiDeployError(f"--workers must be at least 1, got {workers}")
    if address is not None and not address.strip():
        raise CsiDeployError("--ray-address is empty")


@contextmanager
def ray_runtime(workers: int | None = None, address: str | None = None) -> Iterator[Any | None]:
    """Yield the connected `ray` module, or None (run in this process) when neither is given.

    A runtime this call started or joined is shut down on exit; one that was already
    initialised in this process is used and left running.
    """
    check_choice(workers, address)
    if workers is None and address is None:
        yield None
        return
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    _connect(ray, workers, address)
    try:
        yield ray
    finally:
        ray.shutdown()


def _connect(ray: Any, workers: int | None, address: str | None) -> None:
    """`ray.init` for a local runtime of `workers` CPUs or for the cluster at `address`."""
    quiet: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": False,
        "configure_logging": True,
    }
    if address is not None:
        _probe(address)
    try:
        if address is not None:
            ray.init(address=address, **quiet)
        else:
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                **quiet,
            )
    except (ConnectionError, ValueError, RuntimeError, TimeoutError) as error:
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CsiDeployError(f"cannot start or join {where}: {first}") from None


def _probe(address: str) -> None:
    """A CsiDeployError at once when nothing listens at `host:port` (`auto` is not probed)."""
    host, _, port = address.strip().rpartition(":")
    if address.strip() == "auto":
        return
    if not host or not port.isdigit():
        raise CsiDeployError(f"--ray-address must be host:port or auto, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as error:
        raise CsiDeployError(
            f"no Ray head answers at {address} ({error.strerror or error}); start one with "
            "`ray start --head` there"
        ) from None
