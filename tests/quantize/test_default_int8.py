"""The shipped trained default (CLNet CR 1/4 indoor, -17.25 dB on built-in indoor CSI): its
INT8 ONNX encoder quantizes the FC layer, which holds almost every weight and MAC, and keeps
the float accuracy; every layer in int8 (`--int8-layers all`) still fails the gate."""

from __future__ import annotations

import onnx
import pytest
from click.testing import CliRunner

from csideploy.cli import main as cli
from csideploy.export.recipe import ExportConfig, run_export

FC = "encoder.replace_efc/Gemm"


@pytest.fixture(scope="module")
def default_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "out"
    config = ExportConfig(
        model="clnet",
        int8="static",
        formats=("onnx",),
        eval_samples=200,
        calib_samples=128,
        out=str(out),
        latency_runs=5,
    )
    return run_export(config), out


def test_the_default_int8_encoder_quantizes_the_fc_and_keeps_the_float_accuracy(default_export):
    result, out = default_export
    assert result.float_nmse_db < -15.0  # a model that reconstructs
    artifact = result.artifact("encoder.int8.onnx")
    plan = artifact.quantization.layer_plan
    assert plan["precision"] == {FC: "dynamic"}
    decision = next(d for d in plan["decisions"] if d["node"] == FC)
    assert decision["quantized"] and decision["reason"].startswith("int8 (dynamic)")
    n = artifact.numerics
    assert n.delta_nmse_db <= 0.1, n.delta_nmse_db
    assert n.codeword_sqnr_db >= 30.0 and n.fidelity_nmse_db <= -30.0, n
    assert all(g.passed for g in artifact.gates)
    graph = onnx.load(str(out / "encoder.int8.onnx")).graph
    assert [node.op_type for node in graph.node].count("MatMulNBits") == 1
    assert "Gemm" not in {
        node.op_type for node in graph.node if node.name.startswith("encoder.replace_efc")
    }
    assert artifact.bytes < 0.3 * result.artifact("encoder.onnx").bytes


def test_every_layer_in_int8_on_the_default_still_fails_the_gate(tmp_path):
    out = tmp_path / "all"
    result = CliRunner().invoke(
        cli,
        [
            "export",
            "--model",
            "clnet",
            "--int8",
            "--int8-layers",
            "all",
            "--format",
            "onnx",
            "--eval-samples",
            "200",
            "--calib-samples",
            "128",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 3, result.output
    assert "encoder.int8.onnx (float -> INT8 static)" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
