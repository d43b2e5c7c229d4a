"""`csideploy export` through the CLI: JSON output, the INT8 gate, and every error exit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from csideploy.cli import main
from csideploy.models.checkpoint import save_checkpoint

_HELPERS = Path(__file__).parents[1] / "export" / "export_test_models.py"


def _helpers():
    spec = importlib.util.spec_from_file_location("export_test_helpers", _HELPERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "clnet_cr32.pt"
    return save_checkpoint(path, _helpers().handmade_clnet(32))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _export(*args: str):
    """`csideploy export ... --format onnx` (the TFLite format has its own tests)."""
    return CliRunner().invoke(main, ["export", "--format", "onnx", *args])


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


FAST = ("--calib-samples", "32", "--eval-samples", "64")


def test_json_result_and_bare_int8_means_static(workdir, checkpoint):
    result = _export("--model", "clnet", "--checkpoint", str(checkpoint), "--int8", *FAST,
                     "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["int8"] == "static" and payload["cr"] == 32
    assert payload["out_dir"] == str(workdir / "artifacts" / "clnet-cr32")
    files = {p.name for p in (workdir / "artifacts" / "clnet-cr32").iterdir()}
    assert {"decoder.onnx", "encoder.int8.onnx", "encoder.onnx", "manifest.json",
            "numerics.json", "report.md"} <= files
    assert [a["precision"] for a in payload["artifacts"]] == ["fp32", "int8", "fp32"]
    assert payload["artifacts"][1]["numerics"]["delta_nmse_db"] <= 0.5

    again = _export("--model", "clnet", "--checkpoint", str(checkpoint), *FAST)
    assert "--force" in _one_line_error(again)
    assert sorted(p.name for p in (workdir / "artifacts").iterdir()) == ["clnet-cr32"]


def test_force_replaces_with_a_dynamic_int8_export(workdir, checkpoint):
    target = workdir / "artifacts" / "clnet-cr32"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("old")
    previous = {"schema_version": "1.0", "files": [{"path": "stale.txt"}]}  # an earlier export
    (target / "manifest.json").write_text(json.dumps(previous))
    result = _export("--model", "clnet", "--checkpoint", str(checkpoint), "--int8", "dynamic",
                     "--eval-samples", "32", "--force")
    assert result.exit_code == 0, result.stderr
    assert "exported clnet CR 1/32" in result.stdout and "encoder.dyn.onnx" in result.stdout
    files = {p.name for p in target.iterdir()}
    assert {"decoder.onnx", "encoder.dyn.onnx", "encoder.onnx", "manifest.json"} <= files
    assert "stale.txt" not in files and "encoder.int8.onnx" not in files
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["calibration"]["samples"] == 0
    dyn = manifest["quantization"]["encoder.dyn.onnx"]
    assert dyn["mode"] == "dynamic" and dyn["op_types_to_quantize"] == ["MatMul", "Gemm"]
    numerics = json.loads((target / "numerics.json").read_text())
    entry = next(a for a in numerics["artifacts"] if a["file"] == "encoder.dyn.onnx")
    assert entry["precision"] == "dynamic" and entry["delta_nmse_db"] <= 0.5
    assert "Conv" in entry["float_ops"] and "Gemm" not in entry["float_ops"]
    assert sorted(p.name for p in workdir.iterdir()) == ["artifacts"]


def test_defaults_use_the_shipped_checkpoint(workdir):
    """`csideploy export --model clnet --int8` on a fresh install (smaller evaluation set)."""
    result = _export("--model", "clnet", "--int8", "--eval-samples", "128", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert (payload["model"], payload["cr"], payload["codeword_length"]) == ("clnet", 4, 512)
    assert payload["checkpoint"]["file"] == "shipped default clnet_cr4_indoor.pt"
    assert payload["calibration"]["samples"] == 256
    assert payload["calibration"]["source"] == "synthetic indoor (seed 1001)"
    assert payload["evaluation"]["source"] == "synthetic indoor (seed 2002)"
    int8 = next(a for a in payload["artifacts"] if a["file"] == "encoder.int8.onnx")
    assert int8["quantization"]["activation_type"] == "QInt8"
    assert abs(int8["numerics"]["delta_nmse_db"]) <= 0.5
    assert (workdir / "artifacts" / "clnet-cr4" / "encoder.int8.onnx").is_file()


def test_gate_failure_prints_the_layer_table_and_writes_nothing(workdir, checkpoint):
    # barely any channel (an all-0.5 file is refused before quantization, exit 2)
    noise = np.random.default_rng(0).standard_normal((32, 2, 32, 32)).astype(np.float32)
    np.save(workdir / "weak.npy", 0.5 + 2e-4 * noise)
    result = _export("--model", "clnet", "--checkpoint", str(checkpoint), "--int8", "static",
                     "--int8-layers", "all", "--calib", "weak.npy", *FAST, "--out", "out")
    assert result.exit_code == 3
    assert "per-tensor SQNR" in result.stderr and "| encoder." in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: encoder.int8.onnx") and "--max-nmse-drop" in error
    assert sorted(p.name for p in workdir.iterdir()) == ["weak.npy"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--model", "nope"), "unknown model 'nope'"),
        (("--model", "clnet", "--cr", "16"), "none shipped for clnet CR 1/16"),
        (("--model", "clnet", "--cr", "3"), "no CR 1/3"),
        (("--model", "clnet", "--int8", "--calib-samples", "8"), "at least 32"),
        (("--model", "clnet", "--eval-samples", "2"), "at least 16"),
        (("--model", "clnet", "--max-nmse-drop", "-1"), "--max-nmse-drop"),
        (("--model", "clnet", "--opset", "11"), "opset 11"),
        (("--model", "clnet", "--checkpoint", "missing.pt"), "missing.pt"),
        (("--model", "clnet", "--calib", "x.npy"), "--calib is only used by static INT8"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(workdir, args, message):
    line = _one_line_error(_export(*args))
    assert message in line
    assert list(workdir.iterdir()) == []


def test_small_calibration_file(workdir, checkpoint):
    np.save(workdir / "few.npy", np.full((10, 2, 32, 32), 0.5, np.float32))
    line = _one_line_error(_export("--model", "clnet", "--checkpoint", str(checkpoint),
                                   "--int8", "--calib", "few.npy", *FAST))
    assert "holds 10 samples, fewer than 32 requested (--calib-samples)" in line
    assert sorted(p.name for p in workdir.iterdir()) == ["few.npy"]


def test_unwritable_output(workdir, checkpoint):
    (workdir / "plain-file").write_text("x")
    line = _one_line_error(_export("--model", "clnet", "--checkpoint", str(checkpoint),
                                   "--out", "plain-file/out"))
    assert "plain-file" in line and "not a directory" in line
    line = _one_line_error(_export("--model", "clnet", "--checkpoint", str(checkpoint),
                                   "--out", "plain-file"))
    assert "not a directory" in line
    assert sorted(p.name for p in workdir.iterdir()) == ["plain-file"]


def test_unknown_int8_mode_is_a_usage_error(workdir):
    result = _export("--model", "clnet", "--int8", "int4")
    assert result.exit_code == 2 and "int4" in result.stderr
