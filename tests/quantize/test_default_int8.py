"""The shipped trained default (CLNet CR 1/4 indoor, -17.25 dB on built-in indoor CSI): its
INT8 ONNX encoder quantizes the FC layer, which holds almost every weight and MAC, and keeps
the float accuracy; every layer in int8 (`--int8-layers all`) still fails the gate."""

from __future__ import annotations

import json

import onnx
import pytest
from click.testing import CliRunner

from csideploy.cli import main as cli

FC = "encoder.replace_efc/Gemm"
FAST = ["--eval-samples", "200", "--calib-samples", "128"]


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    """`csideploy export --model clnet --int8` (ONNX and TFLite) on fewer samples."""
    out = tmp_path_factory.mktemp("default") / "out"
    result = CliRunner().invoke(
        cli, ["export", "--model", "clnet", "--int8", "--format", "onnx,tflite", *FAST,
              "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    numerics = json.loads((out / "numerics.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    return result.output, out, numerics, manifest


def _artifact(numerics, file):
    return next(a for a in numerics["artifacts"] if a["file"] == file)


def test_the_default_int8_encoder_quantizes_the_fc_and_keeps_the_float_accuracy(default_export):
    _, out, numerics, manifest = default_export
    assert numerics["float_nmse_db"] < -15.0  # a model that reconstructs
    plan = manifest["quantization"]["encoder.int8.onnx"]["layer_plan"]
    assert plan["precision"] == {FC: "dynamic"}
    decision = next(d for d in plan["decisions"] if d["node"] == FC)
    assert decision["quantized"] and decision["reason"].startswith("int8 (dynamic)")
    int8 = _artifact(numerics, "encoder.int8.onnx")
    assert int8["delta_nmse_db"] <= 0.1, int8["delta_nmse_db"]
    assert int8["codeword_sqnr_db"] >= 30.0 and int8["fidelity_nmse_db"] <= -30.0, int8
    assert [g["passed"] for g in int8["gates"]] == [True, True]
    graph = onnx.load(str(out / "encoder.int8.onnx")).graph
    ops = {node.name: node.op_type for node in graph.node}
    assert list(ops.values()).count("MatMulNBits") == 1
    assert FC not in ops  # the float Gemm is gone
    float_bytes = (out / "encoder.onnx").stat().st_size
    assert (out / "encoder.int8.onnx").stat().st_size < 0.3 * float_bytes


def test_the_float_tflite_int8_file_is_announced(default_export):
    output, _, numerics, _ = default_export
    tflite = _artifact(numerics, "encoder.int8.tflite")
    assert tflite["delta_nmse_db"] == pytest.approx(0.0, abs=1e-4)
    assert (
        "warning: encoder.int8.tflite computes in float: the layer plan quantizes "
        f"{FC} in ONNX with per-block int8 activations, which LiteRT lacks"
    ) in output
    assert "--qat-epochs 1 fine-tunes the FC for LiteRT." in output


def test_every_layer_in_int8_on_the_default_still_fails_the_gate(tmp_path):
    out = tmp_path / "all"
    result = CliRunner().invoke(cli, [
        "export", "--model", "clnet", "--int8", "--int8-layers", "all", "--format", "onnx",
        *FAST, "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 3, result.output
    assert "encoder.int8.onnx (float -> INT8 static)" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
