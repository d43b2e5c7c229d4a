"""`csideploy train` under torchrun: real gloo process groups on localhost, compared with one
process training on the same global batch."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from csideploy.calibration.mat_write import save_csi_mat
from csideploy.calibration.synthetic import generate
from csideploy.errors import DistributedError
from csideploy.train import TrainConfig
from csideploy.train.distributed import check_split, launch_from_env
from csideploy.train.options import initial_model

_EPOCHS = 2
_ARGS = [
    *("train", "--model", "crnet", "--cr", "16", "--batch-size", "16", "--lr", "1e-3"),
    *("--scheduler", "const", "--device", "cpu", "--threads", "1", "--no-progress", "--seed", "5"),
]
_TOLERANCE = 5e-4
"""Largest weight difference allowed after 3 and 6 Adam steps: floating-point rounding only.
Measured here: 1.1e-5 (3 steps) and 1.1e-4 (6 steps) between 2 processes and 1; the same
single-process run with 2 threads instead of 1 differs from it by 2.9e-5 and 2.0e-4. Training
moves the weights (BatchNorm statistics included) by over 0.2."""


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "XDG_CACHE_HOME": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _csideploy(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "csideploy.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=_env(tmp), timeout=120)


def _torchrun(launch: list[str], args: list[str], tmp: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "csideploy.cli"]
    return subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp)
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _last_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The weights after the last epoch (the checkpoint holds the best epoch's)."""
    return _weights(checkpoint.with_name(checkpoint.name + ".resume"))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(
        float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()
    )


def _single_node(nproc: int) -> list[str]:
    return [f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1", f"--master-port={_free_port()}"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 training samples (3 global batches of 16) and 16 validation samples."""
    root = tmp_path_factory.mktemp("data")
    csi = generate(64, scenario="indoor", seed=11)
    save_csi_mat(root / "DATA_Htrainin.mat", csi[:48])
    save_csi_mat(root / "DATA_Hvalin.mat", csi[48:])
    return root


@pytest.fixture(scope="module")
def single(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, global batch 16, two epochs."""
    tmp = tmp_path_factory.mktemp("single")
    out = tmp / "one.pt"
    args = [*_ARGS, "--data", str(data), "--epochs", str(_EPOCHS), "--out", str(out)]
    done = _csideploy(args, tmp)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_two_processes_train_the_single_process_model(
    data: Path, single: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run" / "two.pt"
    args = [*_ARGS, "--data", str(data), "--epochs", str(_EPOCHS), "--out", str(out)]
    code, stdout, stderr = _finish(_torchrun(_single_node(2), args, tmp_path))
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == (
        "distributed: world size 2 (gloo), per-rank batch 8, global batch 16, peak lr 0.001 "
        "(const); the recipe of one process with batch 16"
    )
    assert sum(line.startswith("trained crnet CR 1/16: 2 epochs") for line in lines) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["two.pt", "two.pt.resume"]

    reference = _weights(single)
    start = initial_model("crnet", 16, TrainConfig(seed=5), None, None).state_dict()
    assert _max_diff(reference, start) > 100 * _TOLERANCE  # the runs did train
    assert _max_diff(_weights(out), reference) < _TOLERANCE
    assert _max_diff(_last_weights(out), _last_weights(single)) < _TOLERANCE
    meta = torch.load(out, weights_only=True)["metadata"]
    assert meta["distributed"]["world_size"] == 2
    assert meta["distributed"]["per_rank_batch"] == 8


@pytest.fixture(scope="module")
def two_nodes(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """One epoch on two simulated nodes (one process each) meeting at a c10d rendezvous on
    127.0.0.1; returns the run's folder and the two launches' stdout."""
    tmp = tmp_path_factory.mktemp("nodes")
    out = tmp / "run" / "m.pt"
    port = _free_port()
    args = [*_ARGS, "--data", str(data), "--epochs", "1", "--out", str(out)]
    launches = [
        _torchrun(
            [
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={node}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint=127.0.0.1:{port}",
                "--rdzv-id=csideploy-test",
            ],
            args,
            tmp,
        )
        for node in (0, 1)
    ]
    finished = [_finish(proc) for proc in launches]
    for code, _, stderr in finished:
        assert code == 0, stderr
    return out.parent, [stdout for _, stdout, _ in finished]


@pytest.mark.slow
def test_two_nodes_complete_and_write_one_checkpoint(two_nodes: tuple[Path, list[str]]) -> None:
    folder, outputs = two_nodes
    assert sorted(p.name for p in folder.iterdir()) == ["m.pt", "m.pt.resume"]
    assert sorted(len(stdout.splitlines()) for stdout in outputs) == [0, 3]
    printed = "".join(outputs)
    assert printed.count("distributed: world size 2 (gloo)") == 1
    assert printed.count(f"checkpoint: {folder / 'm.pt'}") == 1
    assert torch.load(folder / "m.pt", weights_only=True)["metadata"]["epochs"] == 1


@pytest.mark.slow
def test_resumed_distributed_run_matches_one_uninterrupted_process(
    two_nodes: tuple[Path, list[str]], data: Path, single: Path, tmp_path: Path
) -> None:
    """Epoch 1 on two nodes, epoch 2 resumed by two processes of one node: the result is
    the single process's two epochs."""
    folder = tmp_path / "run"
    shutil.copytree(two_nodes[0], folder)
    out = folder / "m.pt"
    args = [*_ARGS, "--data", str(data), "--epochs", str(_EPOCHS), "--out", str(out), "--resume"]
    code, stdout, stderr = _finish(_torchrun(_single_node(2), [*args, "--json"], tmp_path))
    assert code == 0, stderr
    assert '"resumed_from_epoch": 1' in stdout
    assert _max_diff(_weights(out), _weights(single)) < _TOLERANCE
    assert _max_diff(_last_weights(out), _last_weights(single)) < _TOLERANCE
    state = torch.load(folder / "m.pt.resume", weights_only=True)
    assert state["epoch"] == _EPOCHS


def test_global_batch_that_does_not_split_is_refused(data: Path, tmp_path: Path) -> None:
    """What every rank of `torchrun --nproc-per-node 2` sees; refused before any rendezvous."""
    out = tmp_path / "run" / "m.pt"
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "csideploy.cli", *_ARGS, "--batch-size", "15"]
    done = subprocess.run(
        [*command, "--data", str(data), "--epochs", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**_env(tmp_path), **env, "MASTER_PORT": str(_free_port())},
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "error: --batch-size 15 is the global batch and must split evenly over the 2 "
        "processes; give a multiple of 2\n"
    )
    assert done.stdout == ""
    assert not out.parent.exists()


def test_torchrun_variables_are_checked() -> None:
    config = TrainConfig(batch_size=16, device="cpu")
    master = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    launch = launch_from_env(config, {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", **master})
    assert (launch.world_size, launch.rank, launch.backend, launch.per_rank_batch) == (
        2,
        1,
        "gloo",
        8,
    )
    assert not launch.is_main
    assert not launch_from_env(config, {}).distributed
    bad = {
        "two": ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        "no rank": ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set but RANK is not; start with torchrun"),
        "rank": ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is outside 0..1 (WORLD_SIZE=2)"),
        "master": (
            {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "h"},
            "WORLD_SIZE is set but MASTER_PORT not; start with torchrun",
        ),
    }
    for env, message in bad.values():
        with pytest.raises(DistributedError) as caught:
            launch_from_env(config, env)
        assert str(caught.value) == message


def test_last_global_batch_must_give_every_rank_a_sample() -> None:
    check_split(50, 16, 2)  # 3 batches of 16 and one of 2: one sample per rank
    with pytest.raises(DistributedError, match="the last global batch holds 1 of the 49"):
        check_split(49, 16, 2)
