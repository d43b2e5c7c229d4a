"""Run named shards with retries, in this process or as Ray tasks, keeping finished results.

A shard is a module-level function and its arguments: it returns its result (arrays, file
bytes) and writes nothing itself, so workers need no shared file system. The driver saves
each result as it arrives (`ShardSink.save`, atomic), and a shard whose result is already
saved is not run again. A shard that raises is run again up to `attempts` times; those that
still fail are reported together, by name, in one ShardError after the others finished.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from csideploy.errors import ShardError

DEFAULT_ATTEMPTS = 3
"""Runs of one shard before it is reported as failed."""


@dataclass(frozen=True)
class Shard:
    """One unit of work: `function(*args)`, named for progress, results and failures."""

    name: str
    function: Callable[..., Any]
    args: tuple[Any, ...] = field(default=())


class ShardSink(Protocol):
    """Where results go: `done` says a shard's result is saved and sound, `save` keeps one."""

    def done(self, name: str) -> bool: ...

    def save(self, name: str, result: Any) -> None: ...


def run_shards(
    shards: Sequence[Shard],
    sink: ShardSink,
    ray: Any | None = None,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    progress: bool = False,
    desc: str = "shards",
) -> list[str]:
    """Run the shards `sink` does not have yet; returns the names that ran.

    `ray`: a connected `ray` module (tasks of one CPU each), or None to run them here one
    after another. Raises ShardError naming every shard that failed `attempts` times.
    """
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        raise ValueError("shard names must be unique")
    todo = [s for s in shards if not sink.done(s.name)]
    failures: dict[str, str] = {}
    with _bar(len(shards), len(shards) - len(todo), progress, desc) as bar:
        runner = _run_here if ray is None else _run_on_ray
        runner(todo, sink, ray, attempts, failures, bar.update)
    if failures:
        raise ShardError(_failure_message(failures, len(shards), attempts))
    return [s.name for s in todo]


def call(function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """What a worker runs: the shard. Ray gives a one-CPU task OMP_NUM_THREADS=1, so torch
    and the runtimes use one thread without this importing torch for numpy-only shards."""
    return function(*args)


def _run_here(
    todo: Sequence[Shard],
    sink: ShardSink,
    _ray: Any,
    attempts: int,
    failures: dict[str, str],
    tick: Callable[[int], object],
) -> None:
    """Each shard in order in this process, retried on any Exception."""
    for shard in todo:
        for attempt in range(1, attempts + 1):
            try:
                result = shard.function(*shard.args)
            except Exception as error:  # a shard's own failure, whatever it is, is retried
                if attempt == attempts:
                    failures[shard.name] = _one_line(error)
                continue
            sink.save(shard.name, result)
            tick(1)
            break


def _run_on_ray(
    todo: Sequence[Shard],
    sink: ShardSink,
    ray: Any,
    attempts: int,
    failures: dict[str, str],
    tick: Callable[[int], object],
) -> None:
    """Every shard as a one-CPU Ray task; a failed task is submitted again, results saved
    by the driver as they finish (in any order: the merge reads them in shard order)."""
    task = ray.remote(num_cpus=1, max_retries=0)(call)
    pending: dict[Any, tuple[Shard, int]] = {}
    for shard in todo:
        pending[task.remote(shard.function, shard.args)] = (shard, 1)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        shard, attempt = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as error:  # RayTaskError wraps the shard's own exception
            if attempt < attempts:
                pending[task.remote(shard.function, shard.args)] = (shard, attempt + 1)
            else:
                failures[shard.name] = _one_line(getattr(error, "cause", None) or error)
            continue
        sink.save(shard.name, result)
        tick(1)


def _one_line(error: BaseException) -> str:
    """`Type: first line of the message`, short enough for an error line."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def _failure_message(failures: dict[str, str], total: int, attempts: int) -> str:
    """One line naming each failed shard and why; finished shards are kept for a rerun."""
    listed = "; ".join(f"{name} ({why})" for name, why in sorted(failures.items()))
    return (
        f"{len(failures)} of {total} shard(s) failed after {attempts} attempt(s): {listed}; "
        "finished shards are kept, a rerun does only the rest"
    )


def _bar(total: int, initial: int, enabled: bool, desc: str) -> Any:
    """A tqdm bar of finished shards (those kept from an earlier run count as finished)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="shard", desc=desc, disable=not enabled)
