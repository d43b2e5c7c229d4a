"""The ssh target against a real OpenSSH server on loopback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from csideploy.bench import BenchConfig, RemoteError, SshTarget, run_bench
from csideploy.cli import main
from csideploy.errors import CsiDeployError


def _remote_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("csideploy-bench.*")}


def test_bench_over_ssh(sshd, workdir: Path, golden: Path, tmp_path: Path, perf_schema) -> None:
    before = _remote_dirs()
    result = CliRunner().invoke(
        main,
        [
            "bench",
            str(workdir),
            "--target",
            sshd.url,
            "--identity",
            str(sshd.identity),
            "--ssh-option",
            "ServerAliveInterval=5",
            "--remote-python",
            sys.executable,  # on loopback the remote is this machine: use the venv's python
            "--runs",
            "10",
            "--warmup",
            "1",
            "--inputs",
            str(golden),
            "--save-outputs",
            str(tmp_path / "outputs"),
            "--json",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stderr
    perf = json.loads(result.stdout)
    jsonschema.validate(perf, perf_schema)
    assert perf["target"] == {"kind": "ssh", "url": sshd.url, "python": sys.executable}
    assert perf["machine"]["cpu_model"] and perf["machine"]["cores"] >= 1
    assert all(r["status"] == "ok" for r in perf["results"]), perf["results"]
    assert len(perf["results"]) == 4
    # Artifact paths point back at the local files, not the remote temporary copy.
    assert {Path(a["path"]).parent for a in perf["artifacts"]} == {workdir}
    assert (workdir / "perf.json").is_file()
    saved = np.load(tmp_path / "outputs" / "encoder.onnx.npy")
    assert saved.shape == (len(np.load(golden)), 32)
    assert _remote_dirs() == before  # the remote temporary directory is gone


def test_failed_remote_run_still_cleans_up(sshd, workdir: Path) -> None:
    before = _remote_dirs()
    config = BenchConfig(
        target=sshd.url,
        identity=str(sshd.identity),
        remote_python="/nonexistent/python3",
        runs=3,
        warmup=0,
    )
    with pytest.raises(RemoteError, match=r"runner failed: .*nonexistent/python3"):
        run_bench(workdir, config, write=False)
    assert _remote_dirs() == before


def test_unreachable_and_refused(sshd, workdir: Path, tmp_path: Path) -> None:
    wrong_key = tmp_path / "not_a_key"
    wrong_key.write_text("nothing")
    config = BenchConfig(target=f"ssh://nobody@127.0.0.1:{sshd.port}", identity=str(wrong_key))
    with pytest.raises(RemoteError, match=r"creating a temp dir failed \(ssh exit 255\)"):
        run_bench(workdir, config, write=False)


@pytest.mark.parametrize(
    ("url", "host", "user", "port"),
    [
        ("ssh://pi@raspberrypi.local", "raspberrypi.local", "pi", None),
        ("ssh://root@10.0.0.7:2222", "10.0.0.7", "root", 2222),
        ("ssh://board", "board", None, None),
        ("ssh://me@[::1]:22", "::1", "me", 22),
    ],
)
def test_target_url(url: str, host: str, user: str | None, port: int | None) -> None:
    target = SshTarget.parse(url)
    assert (target.host, target.user, target.port) == (host, user, port)
    assert target.python == "python3"


@pytest.mark.parametrize("url", ["ssh://", "ssh://a@b:c", "ssh://user@host/path", "ssh:/x"])
def test_bad_target_url(url: str) -> None:
    with pytest.raises(CsiDeployError, match="is not ssh://"):
        SshTarget.parse(url)
