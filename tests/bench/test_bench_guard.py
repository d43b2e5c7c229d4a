"""`bench` writes nothing when nothing was measured and bounds --threads (issue 15, item 10)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from csideploy.cli import main

QUICK = ["--runs", "3", "--warmup", "0", "--no-roofline"]


def _bench(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["bench", *args, *QUICK], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _one_error_line(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err


def test_a_random_onnx_file_is_an_error_not_a_report(tmp_path: Path) -> None:
    folder = tmp_path / "random"
    folder.mkdir()
    (folder / "encoder.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    code, _, err = _bench(str(folder))
    _one_error_line(code, err, "nothing was measured (encoder.onnx: ")
    assert "perf.json and report.md left unchanged" in err
    assert sorted(p.name for p in folder.iterdir()) == ["encoder.onnx"]


def test_wrong_shape_inputs_leave_earlier_results_alone(workdir: Path, tmp_path: Path) -> None:
    (workdir / "perf.json").write_text('{"earlier": true}\n')
    report = (workdir / "report.md").read_bytes() if (workdir / "report.md").exists() else None
    inputs = tmp_path / "wrong.npy"
    np.save(inputs, np.zeros((4, 3, 7), np.float32))
    code, _, err = _bench(str(workdir), "--inputs", str(inputs), "--runtime", "onnxruntime")
    _one_error_line(code, err, "nothing was measured")
    assert "per-sample shape (3, 7)" in err
    assert (workdir / "perf.json").read_text() == '{"earlier": true}\n'
    after = (workdir / "report.md").read_bytes() if (workdir / "report.md").exists() else None
    assert after == report


def test_threads_beyond_the_cores_are_refused(workdir: Path) -> None:
    cores = os.cpu_count()
    code, _, err = _bench(str(workdir), "--threads", f"1,{1000}")
    _one_error_line(code, err, f"--threads 1000: this machine has {cores} cores")
    assert not (workdir / "perf.json").exists()
