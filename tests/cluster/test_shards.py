"""Shards without Ray: retries, failures by name, kept results, checks on rerun, and the
built-in data set in shards byte for byte equal to the single-process writer."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from csideploy.calibration.synthetic import split_seeds, write_synthetic_dataset
from csideploy.calibration.synthetic_config import SyntheticConfig
from csideploy.calibration.synthetic_shards import (
    SHARDS_PREFIX,
    plan,
    shard_folder,
    write_sharded_synthetic,
)
from csideploy.cli import main
from csideploy.cluster.shards import Shard, run_shards
from csideploy.cluster.store import ArraySink
from csideploy.errors import DataError, ShardError

SPEC = {"x": ((2,), "float32")}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _flaky(calls: list[str], name: str, fail_first: int) -> dict[str, np.ndarray]:
    calls.append(name)
    if calls.count(name) <= fail_first:
        raise RuntimeError(f"{name} attempt {calls.count(name)} broke")
    return {"x": np.arange(2, dtype=np.float32) + len(name)}


def test_failed_shard_is_retried_then_named_and_others_are_kept(tmp_path: Path) -> None:
    calls: list[str] = []
    sink = ArraySink(tmp_path, {n: SPEC for n in ("ok", "flaky", "broken")})
    shards = [
        Shard("ok", _flaky, (calls, "ok", 0)),
        Shard("flaky", _flaky, (calls, "flaky", 2)),
        Shard("broken", _flaky, (calls, "broken", 99)),
    ]
    with pytest.raises(ShardError) as caught:
        run_shards(shards, sink)
    message = str(caught.value)
    assert (
        "1 of 3 shard(s) failed after 3 attempt(s): broken (RuntimeError: broken attempt 3"
        in message
    )
    assert caught.value.exit_code == 4
    assert calls.count("flaky") == 3 and calls.count("broken") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flaky.npz", "ok.npz"]

    calls.clear()
    shards[2] = Shard("broken", _flaky, (calls, "broken", 0))
    assert run_shards(shards, sink) == ["broken"]  # the rerun does only what is missing
    assert calls == ["broken"]


def test_damaged_or_off_plan_results_are_not_trusted(tmp_path: Path) -> None:
    sink = ArraySink(tmp_path, {"a": SPEC})
    sink.path("a").write_bytes(b"PK\x03\x04 truncated")
    assert not sink.done("a")
    np.savez(sink.path("a"), x=np.zeros(3, dtype=np.float32))  # wrong shape
    assert not sink.done("a")
    before = sink.path("a").read_bytes()
    with pytest.raises(DataError, match="shard a returned arrays that do not match its plan"):
        sink.save("a", {"x": np.zeros(2, dtype=np.float64)})
    assert sink.path("a").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temporary file left


def test_sharded_builtin_bytes_equal_single_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    options = {"n": 1400, "seed": 5, "scenario": "outdoor"}
    write_synthetic_dataset(tmp_path / "plain", **options)
    target = tmp_path / "sharded"
    target.mkdir()
    first = write_sharded_synthetic(target, ray=None, **options)
    assert _digests(tmp_path / "plain") == _digests(target)
    assert not list(target.glob(f"{SHARDS_PREFIX}*"))  # the shard folder is removed
    assert set(first) == {"train", "val", "test", "testF", "manifest"}


def test_a_damaged_kept_shard_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    write_synthetic_dataset(tmp_path / "plain", n=600, seed=1)
    target = tmp_path / "sharded"
    target.mkdir()
    cfg = SyntheticConfig.preset("indoor")
    counts = {"train": 400, "val": 120, "test": 80}
    shards, _ = plan(cfg, counts, split_seeds(1))
    folder = shard_folder(target, cfg, shards)
    folder.mkdir()
    (folder / "train-00000.npz").write_bytes(b"PK\x03\x04 left by a killed run")
    write_sharded_synthetic(target, ray=None, n=600, seed=1)
    assert _digests(tmp_path / "plain") == _digests(target)
    assert not folder.exists()


def test_cluster_option_errors_are_one_line(tmp_path: Path) -> None:
    out = tmp_path / "o"
    cases = [
        (
            ["--workers", "2", "--ray-address", "x:1"],
            "error: --workers starts a local Ray runtime, --ray-address joins one: pick one",
        ),
        (["--ray-address", "127.0.0.1:1"], "error: no Ray head answers at 127.0.0.1:1"),
        (
            ["--ray-address", "nocolon"],
            "error: --ray-address must be host:port or auto, got 'nocolon'",
        ),
        (
            ["--source", "cost2100", "--cost2100-dir", "x", "--ray-address", "h:1"],
            "--source cost2100 runs Octave here: use --workers N",
        ),
        (
            ["--paired", "--workers", "2"],
            "error: --workers / --ray-address shard the built-in (unpaired) and sionna sources; "
            "paired built-in data runs in one process",
        ),
    ]
    for extra, expected in cases:
        result = CliRunner().invoke(main, ["data", "synth", "-n", "30", "-o", str(out), *extra])
        assert result.exit_code == 2, result.output
        assert expected in result.output
        assert "Traceback" not in result.output
        assert not out.exists()


def test_without_ray_the_options_name_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where it is absent
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main, ["data", "synth", "-n", "30", "-o", str(out), "--workers", "2"]
    )
    assert result.exit_code == 2
    assert (
        "error: --workers / --ray-address need Ray: pip install 'csideploy[cluster]'"
        in result.output
    )
    assert not out.exists()
