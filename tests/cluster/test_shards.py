"""Shards without Ray: retries, failures by name, kept results, checks on rerun, and the
built-in data set in shards byte for byte equal to the single-process writer."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from csideploy.calibration.cost2100_shards import plan as cost2100_plan
from csideploy.calibration.cost2100_shards import write_sharded_cost2100
from csideploy.calibration.dataset_writer import write_synthetic_dataset
from csideploy.calibration.paired import write_paired_dataset
from csideploy.calibration.paired_shards import plan as paired_plan
from csideploy.calibration.paired_shards import write_sharded_paired
from csideploy.calibration.synthetic import split_seeds
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
REPO = Path(__file__).resolve().parents[2]


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
            [
                "--source",
                "cost2100",
                "--cost2100-dir",
                "x",
                "--ray-address",
                "h:1",
                "--workers",
                "2",
            ],
            "error: --source cost2100: --workers N runs N Octave processes here, --ray-address "
            "runs each batch on a Ray cluster: pick one",
        ),
        (  # the model folder is checked here before any Ray head is asked
            ["--source", "cost2100", "--cost2100-dir", str(tmp_path), "--ray-address", "h:1"],
            f"error: {tmp_path}: no cost2100.m here or in {tmp_path / 'matlab'}",
        ),
        (
            ["--paired", "--ray-address", "127.0.0.1:1"],
            "error: no Ray head answers at 127.0.0.1:1",
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


def test_sharded_paired_bytes_equal_single_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    options = {"n": 2600, "seed": 3, "scenario": "outdoor", "ul_carrier_hz": 0.29e9}
    plain = write_paired_dataset(tmp_path / "plain", **options)
    counts = plain.counts
    cfg = SyntheticConfig.preset("outdoor")
    shards, _ = paired_plan(cfg, counts, split_seeds(3), 0.29e9)
    assert [s.name for s in shards] == ["train-00000", "train-00001", "val-00000", "test-00000"]
    sharded = write_sharded_paired(tmp_path / "sharded", ray=None, **options)
    assert _digests(tmp_path / "plain") == _digests(tmp_path / "sharded")
    assert sharded.manifest == plain.manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "sharded"]  # folder removed


def test_a_cost2100_batch_without_the_model_on_its_node_is_named(tmp_path: Path) -> None:
    from csideploy.calibration.cost2100_source import PRESETS

    (tmp_path / "kept").mkdir()
    shards, specs = cost2100_plan(PRESETS["indoor"], tmp_path / "gone", [(1, 5)])
    sink = ArraySink(tmp_path / "kept", specs)
    with pytest.raises(ShardError) as caught:
        run_shards(shards, sink)
    assert (
        f"1 of 1 shard(s) failed after 3 attempt(s): batch-00000 (DataError: {tmp_path / 'gone'}: "
        "no cost2100.m on node "
    ) in str(caught.value)
    assert "--cost2100-dir must hold the COST2100 model at the same path on every Ray node" in (
        str(caught.value)
    )
    assert list((tmp_path / "kept").iterdir()) == []


def test_kept_cost2100_batches_are_not_drawn_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches kept by an interrupted run are merged as they are: no Octave runs for them."""
    from csideploy.calibration.cost2100_shards import shard_folder as cost_folder
    from csideploy.calibration.cost2100_source import PRESETS, model_dir, plan_batches
    from csideploy.calibration.io import load_csi

    model = model_dir(REPO / "third_party" / "cost2100")
    shards, _ = cost2100_plan(PRESETS["indoor"], model, plan_batches(3, 11))
    target = tmp_path / "data"
    folder = cost_folder(target, PRESETS["indoor"], shards)
    folder.mkdir()
    rng = np.random.default_rng(0)
    kept = []
    for shard in shards:
        x = rng.random((1, 2, 32, 32), dtype=np.float32)
        hf = (rng.random((1, 32, 125)) + 1j).astype(np.complex64)
        kept.append(x)
        np.savez(folder / f"{shard.name}.npz", x=x, hf=hf, redraws=np.int64(2), reruns=np.int64(0))
    fractions = {"val_fraction": 0.34, "test_fraction": 0.34}
    files = write_sharded_cost2100(target, ray=None, cost2100_dir=model, n=3, seed=11, **fractions)
    merged = [load_csi(files[s]) for s in ("train", "val", "test")]
    for got, want in zip(merged, kept, strict=True):
        np.testing.assert_array_equal(got, want)
    assert json.loads(files["manifest"].read_text())["redraws"] == 6
    assert not folder.exists()


def test_failing_cost2100_batches_are_named_and_leave_no_file(tmp_path: Path) -> None:
    """A model whose cost2100.m always fails: every batch is rerun (Octave, then shard
    retries), then named; no data file appears, only the (empty) shard folder stays."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "cost2100.m").write_text(
        "function varargout = cost2100(varargin)\nerror('hostile model: no channel here');\nend\n"
    )
    target = tmp_path / "data"
    fractions = {"val_fraction": 0.34, "test_fraction": 0.34}
    with pytest.raises(ShardError) as caught:
        write_sharded_cost2100(target, ray=None, cost2100_dir=model, n=3, **fractions)
    message = str(caught.value)
    assert message.startswith("3 of 3 shard(s) failed after 3 attempt(s): batch-00000 (DataError: ")
    assert "batch-00002 (DataError: COST2100 under Octave produced no output after 3 runs: " in (
        message
    )
    assert "hostile model: no channel here" in message and caught.value.exit_code == 4
    assert not target.exists()
    (kept,) = [p for p in tmp_path.iterdir() if p.name.startswith(SHARDS_PREFIX)]
    assert list(kept.iterdir()) == []
