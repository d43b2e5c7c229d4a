"""On a real Ray cluster (a head and a worker node, loopback only): `data synth
--ray-address` writes the bytes of a single-process run, a sweep's cells equal a
single-process export, and a failing shard is retried, named and leaves no file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner
from ray_cluster import LoopbackRayCluster

import csideploy
from csideploy.cli import main
from csideploy.cluster.runtime import ray_runtime
from csideploy.cluster.shards import Shard, run_shards
from csideploy.cluster.store import ArraySink
from csideploy.errors import ShardError

REPO = Path(__file__).resolve().parents[2]
EPOCH = "1700000000"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """The address of a two-node loopback cluster, stopped (only it) after the module."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    nodes = LoopbackRayCluster(env)
    try:
        yield nodes.start()
    finally:
        nodes.stop()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`csideploy ARGS` as its own process (the way a user runs it against a cluster)."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "csideploy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_synth_on_the_cluster_is_byte_identical_to_one_process(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    args = ["data", "synth", "-n", "3000", "--seed", "7", "--no-progress"]
    plain = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    run = _cli(*args, "-o", str(tmp_path / "ray"), "--ray-address", cluster)
    assert run.returncode == 0, run.stderr
    assert _digests(tmp_path / "plain") == _digests(tmp_path / "ray")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "ray"]  # no shard folder


def test_a_failing_shard_is_retried_and_named_on_the_cluster(cluster: str, tmp_path: Path) -> None:
    from csideploy.calibration.synthetic_config import SyntheticConfig
    from csideploy.calibration.synthetic_shards import make_block

    cfg = SyntheticConfig.preset("indoor")
    spec = {"x": ((8, 2, 32, 32), "float32")}
    shards = [
        Shard("good", make_block, (cfg, 3, 0, 8, False)),
        Shard("hostile-seed", make_block, (cfg, -1, 0, 8, False)),  # no stream for seed -1
    ]
    sink = ArraySink(tmp_path, {"good": spec, "hostile-seed": spec})
    with ray_runtime(address=cluster) as ray, pytest.raises(ShardError) as caught:
        run_shards(shards, sink, ray)
    assert "1 of 2 shard(s) failed after 3 attempt(s): hostile-seed (" in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == ["good.npz"]
    expected = make_block(cfg, 3, 0, 8, False)["x"]
    assert np.array_equal(sink.load("good")["x"], expected)


def test_sweep_on_the_cluster_equals_one_process(cluster: str, tmp_path: Path) -> None:
    small = ["--eval-samples", "32", "--calib-samples", "32"]
    grid = ["--model", "crnet", "--cr", "64", "--int8", "none,dynamic", "--format", "onnx"]
    out = tmp_path / "sweep"
    run = _cli("sweep", *grid, *small, "--out", str(out), "--ray-address", cluster, "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    schema = json.loads(
        (Path(csideploy.__file__).parent / "bundle" / "cli-output.schema.json").read_text()
    )
    jsonschema.validate(result, {**schema, "$ref": "#/$defs/sweep"})
    assert result["cells"] == ["crnet-cr64-onnx-float", "crnet-cr64-onnx-dynamic"]
    report = (out / "report.md").read_text()
    assert "crnet-cr64 (crnet-cr64-onnx-float)" in report
    assert "crnet-cr64 (crnet-cr64-onnx-dynamic)" in report

    ref = tmp_path / "ref"
    one = _cli(
        "export",
        "--model",
        "crnet",
        "--cr",
        "64",
        "--int8",
        "dynamic",
        "--format",
        "onnx",
        *small,
        "--out",
        str(ref),
    )
    assert one.returncode == 0, one.stderr
    numerics = {a["file"]: a for a in json.loads((ref / "numerics.json").read_text())["artifacts"]}
    cells = out / "cells"
    for cell, file in [
        ("crnet-cr64-onnx-float", "encoder.onnx"),
        ("crnet-cr64-onnx-dynamic", "encoder.dyn.onnx"),
    ]:
        assert (cells / cell / file).read_bytes() == (ref / file).read_bytes()
        row = next(r for r in result["rows"] if (r["cell"], r["file"]) == (cell, file))
        assert row["nmse_db"] == pytest.approx(numerics[file]["nmse_db"], abs=1e-9)
        assert row["bytes"] == (ref / file).stat().st_size

    assert _cli("verify", str(cells / "crnet-cr64-onnx-dynamic")).returncode == 0
    again = _cli("sweep", *grid, *small, "--out", str(out), "--ray-address", cluster, "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["ran"] == []  # both cells kept


def test_sionna_shards_on_the_cluster_equal_shards_here(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from csideploy.calibration.sionna_shards import write_sharded_sionna

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    here = write_sharded_sionna(tmp_path / "here", ray=None, n=8, chunk=2, seed=4)
    assert here.manifest["sharding"]["drops_per_shard"] == 2
    run = _cli(
        "data",
        "synth",
        "--source",
        "sionna",
        "-n",
        "8",
        "--chunk",
        "2",
        "--seed",
        "4",
        "-o",
        str(tmp_path / "ray"),
        "--ray-address",
        cluster,
        "--no-progress",
    )
    assert run.returncode == 0, run.stderr
    assert _digests(tmp_path / "here") == _digests(tmp_path / "ray")


def test_cost2100_batches_on_the_cluster_equal_local_octave_processes(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch an Octave process on whichever node runs its task: the same bytes as two
    local Octave processes (three 1-sample batches, about 2 s of Octave each)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    model = str(REPO / "third_party" / "cost2100")
    args = ["data", "synth", "--source", "cost2100", "--cost2100-dir", model, "-n", "3"]
    args += ["--seed", "2", "--val-fraction", "0.34", "--test-fraction", "0.34", "--no-progress"]
    local = CliRunner().invoke(main, [*args, "--workers", "2", "-o", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    run = _cli(*args, "--ray-address", cluster, "-o", str(tmp_path / "ray"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("cost2100 indoor, HT at 5.3 GHz; 1 train / 1 val / 1 test")
    assert _digests(tmp_path / "local") == _digests(tmp_path / "ray")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local", "ray"]  # no shard folder


def test_paired_on_the_cluster_is_byte_identical_to_one_process(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    args = ["data", "synth", "--paired", "-n", "2600", "--seed", "5", "--no-progress"]
    plain = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    run = _cli(*args, "-o", str(tmp_path / "ray"), "--ray-address", cluster)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("builtin indoor, paired UL/DL")
    assert _digests(tmp_path / "plain") == _digests(tmp_path / "ray")
