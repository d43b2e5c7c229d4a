"""The export recipe end to end: files, manifest, numerics, gates, reproducibility, formats."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
import torch
from export_test_models import handmade_clnet, small_model

from csideploy.errors import CheckpointError, DataError, OutputExistsError, ToleranceError
from csideploy.formats.base import FORMATS, Format
from csideploy.formats.onnx import OnnxRunner, inspect_onnx
from csideploy.gates.numerics import NmseGateError
from csideploy.models.checkpoint import save_checkpoint
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.format_steps import FORMAT_STEPS, register_step
from csideploy.pipeline.results import ArtifactResult
from csideploy.pipeline.run import run_export
from csideploy.pipeline.steps import CalibrationWarning, split_step

FAST = {"calib_samples": 32, "eval_samples": 64, "latency_runs": 10, "int8_layers": "all"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "handmade_clnet_cr32.pt"
    return save_checkpoint(path, handmade_clnet(32))


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "clnet-cr32"
    config = ExportConfig(model="clnet", cr=32, checkpoint=str(checkpoint), int8="static",
                          out=str(out), **FAST)
    return run_export(config)


def _siblings(out):
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(out.name))


def test_writes_the_three_graphs_and_the_reports(exported):
    out = exported.out_dir
    names = {p.name for p in out.iterdir()}
    assert {"decoder.onnx", "encoder.int8.onnx", "encoder.onnx", "manifest.json",
            "numerics.json", "report.md"} <= names
    assert not any(name.endswith((".tflite", ".tmp")) for name in names)
    assert [a.file for a in exported.artifacts] == [
        "encoder.onnx", "encoder.int8.onnx", "decoder.onnx"
    ]
    assert [(a.side, a.precision) for a in exported.artifacts] == [
        ("UE", "fp32"), ("UE", "int8"), ("BS", "fp32")
    ]
    assert _siblings(out) == ["clnet-cr32"]  # no staging directory left behind


def test_artifact_records_match_the_files(exported):
    import hashlib

    for artifact in exported.artifacts:
        data = artifact.path.read_bytes()
        assert artifact.bytes == len(data)
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
    fp32, int8, decoder = exported.artifacts
    assert fp32.numerics.max_abs_error <= 1e-4 and decoder.numerics.max_abs_error <= 1e-4
    assert int8.numerics.delta_nmse_db <= 0.5
    assert int8.gates[0].passed and int8.quantization.mode == "static"
    assert {"ReduceMax", "ReduceMean"} <= set(int8.float_ops)
    assert fp32.float_ops is None and int8.layers and not fp32.layers
    assert int8.bytes < fp32.bytes / 2.5  # int8 weights
    assert all(a.latency is not None and a.latency.p50_us > 0 for a in exported.artifacts)


def test_graphs_are_split_and_carry_metadata(exported):
    encoder = onnx.load(str(exported.out_dir / "encoder.onnx"))
    decoder = onnx.load(str(exported.out_dir / "decoder.onnx"))
    assert not any(i.name.startswith("decoder.") for i in encoder.graph.initializer)
    assert not any(i.name.startswith("encoder.") for i in decoder.graph.initializer)
    assert not any(n.name.startswith("decoder") for n in encoder.graph.node)
    assert not any(n.name.startswith("encoder") for n in decoder.graph.node)
    for model, role in ((encoder, "encoder"), (decoder, "decoder")):
        meta = {p.key: p.value for p in model.metadata_props}
        assert meta["model"] == "clnet" and meta["cr"] == "32" and meta["role"] == role
        assert meta["codeword_length"] == "64"
        assert meta["producer_version"].startswith("csideploy ")
        assert "0.5 meaning zero" in meta["input_convention"]
    int8 = onnx.load(str(exported.out_dir / "encoder.int8.onnx"))
    meta = {p.key: p.value for p in int8.metadata_props}
    assert meta["precision"] == "int8"
    assert "minmax calibration on 32 samples" in meta["quantization"]


def test_manifest(exported, checkpoint):
    """The bundle manifest carries what the export knows: model, checkpoint, every file,
    the input and codeword contract, calibration, quantization and tool versions."""
    import hashlib

    manifest = json.loads((exported.out_dir / "manifest.json").read_text())
    model = manifest["model"]
    assert (model["name"], model["cr"], model["codeword_length"]) == ("clnet", 32, 64)
    assert model["checkpoint"]["source_format"] == "csideploy"
    assert model["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    files = {f["path"]: f for f in manifest["files"]}
    assert {"encoder.onnx", "encoder.int8.onnx"} <= set(files)
    for name, entry in files.items():
        data = (exported.out_dir / name).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert [f["path"] for f in manifest["bs_side"]] == ["decoder.onnx"]
    assert manifest["input"]["shape"] == ["batch", 2, 32, 32]
    assert manifest["input"]["zero_offset"] == 0.5
    assert manifest["codeword"] == {"name": "codeword", "shape": ["batch", 64],
                                    "dtype": "float32", "length": 64}
    assert manifest["calibration"]["samples"] == 32
    assert manifest["calibration"]["method"] == "minmax"
    assert manifest["calibration"]["source"].startswith("synthetic indoor")
    assert set(manifest["tools"]) >= {"csideploy", "torch", "onnx", "onnxruntime"}
    quant = manifest["quantization"]["encoder.int8.onnx"]
    assert quant["per_channel"] and quant["weight_type"] == "QInt8"
    assert quant["excluded_nodes"] == ["encoder.encoder1.conv3x3_bn/Conv",
                                       "encoder.encoder2/Conv"]


def test_numerics_json(exported):
    numerics = json.loads((exported.out_dir / "numerics.json").read_text())
    assert numerics["nmse_convention"]["name"] == "linear"
    assert "mean of per-sample" in numerics["nmse_convention"]["description"]
    assert numerics["samples"] == {"evaluation": 64, "calibration": 32}
    assert numerics["float_nmse_db"] == pytest.approx(exported.float_nmse_db)
    assert numerics["float_nmse_db"] < -1.0  # the reference model reconstructs
    by_file = {a["file"]: a for a in numerics["artifacts"]}
    int8 = by_file["encoder.int8.onnx"]
    assert int8["compared_output"] == "codeword"
    assert int8["delta_nmse_db"] == pytest.approx(int8["nmse_db"] - numerics["float_nmse_db"])
    assert int8["layers"] and {"node", "tensor", "sqnr_db"} <= set(int8["layers"][0])
    assert by_file["decoder.onnx"]["compared_output"] == "csi_hat"
    assert numerics["limits"] == {"onnx_max_abs_error": 1e-4, "max_nmse_drop_db": 0.3}


def test_report(exported):
    report = (exported.out_dir / "report.md").read_text()
    assert "onnxruntime" in report and "1 thread, batch 1" in report
    assert "encoder.int8.onnx" in report and "| 131,604 |" in report  # encoder params
    assert "Delta NMSE" in report and "per-tensor SQNR" in report


def test_json_dict_is_plain_json(exported):
    payload = json.loads(json.dumps(exported.to_dict(), allow_nan=False))
    assert payload["artifacts"][1]["quantization"]["mode"] == "static"
    assert set(payload["seconds"]) >= {"load", "split", "onnx", "write"}


def test_two_exports_are_byte_identical(exported, checkpoint, tmp_path):
    again = run_export(ExportConfig(model="clnet", cr=32, checkpoint=str(checkpoint),
                                    int8="static", out=str(tmp_path / "again"), **FAST))
    for name in ("encoder.onnx", "encoder.int8.onnx", "decoder.onnx", "numerics.json"):
        assert (again.out_dir / name).read_bytes() == (exported.out_dir / name).read_bytes()


def test_flat_calibration_is_refused_and_nothing_is_written(checkpoint, tmp_path):
    """All-0.5 CSI (no channel at all) would calibrate every range to zero width."""
    broken = tmp_path / "flat.npy"
    np.save(broken, np.full((32, 2, 32, 32), 0.5, np.float32))
    out = tmp_path / "out"
    config = ExportConfig(model="clnet", cr=32, checkpoint=str(checkpoint), int8="static",
                          calib=str(broken), out=str(out), **FAST)
    with pytest.raises(DataError, match="has zero variance"):
        run_export(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.npy"]


def _weak_calibration(tmp_path):
    """Barely any channel: ranges far too narrow for the evaluation CSI."""
    weak = tmp_path / "weak.npy"
    noise = np.random.default_rng(0).standard_normal((32, 2, 32, 32)).astype(np.float32)
    np.save(weak, 0.5 + 2e-4 * noise)
    return weak


def test_weak_calibration_trips_the_gate_and_writes_nothing(checkpoint, tmp_path):
    weak = _weak_calibration(tmp_path)
    out = tmp_path / "out"
    config = ExportConfig(model="clnet", cr=32, checkpoint=str(checkpoint), int8="static",
                          calib=str(weak), out=str(out), **FAST)
    with pytest.raises(NmseGateError) as caught, pytest.warns(CalibrationWarning, match="RMS"):
        run_export(config)
    error = caught.value
    assert isinstance(error, ToleranceError) and error.exit_code == 3
    assert "encoder.int8.onnx" in str(error)
    worst = error.layers[0]
    assert worst.node.startswith("encoder.") and worst.local_sqnr_db < 10
    assert worst.node in error.table()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weak.npy"]


def test_open_limits_accept_the_weak_calibration(checkpoint, tmp_path):
    weak = _weak_calibration(tmp_path)
    with pytest.warns(CalibrationWarning, match="RMS"):
        result = run_export(ExportConfig(model="clnet", cr=32, checkpoint=str(checkpoint),
                                         int8="static", calib=str(weak), max_nmse_drop=math.inf,
                                         min_codeword_sqnr=-math.inf, max_fidelity_nmse=math.inf,
                                         out=str(tmp_path / "out"), **FAST))
    int8 = result.artifact("encoder.int8.onnx")
    assert int8.numerics.delta_nmse_db > 0.3 and all(g.passed for g in int8.gates)
    numerics = json.loads((result.out_dir / "numerics.json").read_text())
    assert numerics["limits"]["max_nmse_drop_db"] == "inf"
    assert numerics["calibration"]["source"] == str(weak)


@pytest.mark.parametrize("cr", [8])
def test_other_compression_ratios(cr, tmp_path):
    model = small_model("clnet", cr, seed=cr)
    path = save_checkpoint(tmp_path / "m.pt", model)
    result = run_export(ExportConfig(model="clnet", cr=cr, checkpoint=str(path),
                                     out=str(tmp_path / "out"), latency_runs=0,
                                     eval_samples=32))
    assert [a.file for a in result.artifacts] == ["encoder.onnx", "decoder.onnx"]
    assert result.codeword_length == 2048 // cr
    x = np.random.default_rng(0).random((3, 2, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = model.encoder(torch.from_numpy(x)).numpy()
    assert np.abs(OnnxRunner(result.out_dir / "encoder.onnx")(x) - expected).max() <= 1e-4


def test_clnet_cr4_static_int8(tmp_path):
    """The default model size: a 4 MB float encoder, a 4x smaller INT8 one within the gate."""
    path = save_checkpoint(tmp_path / "clnet_cr4.pt", handmade_clnet(4))
    result = run_export(ExportConfig(model="clnet", checkpoint=str(path), int8="static",
                                     out=str(tmp_path / "out"), eval_samples=128,
                                     latency_runs=20))
    fp32, int8 = result.artifact("encoder.onnx"), result.artifact("encoder.int8.onnx")
    assert result.cr == 4 and result.codeword_length == 512
    assert result.sizes.params_encoder == 1_049_556
    assert fp32.numerics.max_abs_error <= 1e-4
    assert int8.numerics.delta_nmse_db <= 0.5 and int8.bytes < fp32.bytes / 3.5
    # the default layer plan: the 2048 -> 512 FC layer in int8, the small convolutions float
    plan = int8.quantization.layer_plan
    assert any(n.endswith("/Gemm") for n in plan["quantized"]), plan
    assert int8.op_counts["QuantizeLinear"] >= 1 and int8.latency.p50_us > 0


def test_crnet_official_trainer_checkpoint(tmp_path):
    """A CRNet trainer file: flat official keys under 'state_dict', with trainer extras."""
    model = small_model("crnet", 16, seed=7)
    flat = {k.split(".", 1)[1]: v for k, v in model.state_dict().items()}
    assert "encoder_fc.weight" in flat and "decoder_fc.weight" in flat
    torch.save({"epoch": 3, "state_dict": flat, "best_nmse": -10.0}, tmp_path / "best.pth")
    result = run_export(ExportConfig(model="crnet", checkpoint=str(tmp_path / "best.pth"),
                                     out=str(tmp_path / "out"), latency_runs=0,
                                     eval_samples=32))
    assert result.model == "crnet" and result.cr == 16
    assert result.checkpoint.source_format == "trainer-dict"
    assert result.artifact("encoder.onnx").numerics.max_abs_error <= 1e-4
    assert result.artifact("decoder.onnx").numerics.max_abs_error <= 1e-4


def test_errors_leave_nothing(checkpoint, tmp_path):
    out = tmp_path / "out"
    few = tmp_path / "few.npy"
    np.save(few, np.full((10, 2, 32, 32), 0.5, np.float32))
    with pytest.raises(DataError, match="holds 10 samples, fewer than 32"):
        run_export(ExportConfig(model="clnet", checkpoint=str(checkpoint), int8="static",
                                calib=str(few), out=str(out), **FAST))
    with pytest.raises(DataError, match="at least 32"):
        ExportConfig(model="clnet", int8="static", calib_samples=8)
    with pytest.raises(CheckpointError, match="CR 1/16"):
        run_export(ExportConfig(model="clnet", cr=16, out=str(out)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.npy"]
    out.mkdir()
    with pytest.raises(OutputExistsError, match="--force"):
        run_export(ExportConfig(model="clnet", checkpoint=str(checkpoint), out=str(out)))


def test_split_linearizes_the_fc_convolutions(checkpoint):
    split = split_step(handmade_clnet(64))
    assert split.linearized == ("encoder.replace_efc", "decoder.replace_dfc")
    assert split.codeword_length == 32 and split.input_shape == (2, 32, 32)
    assert split.sizes.params_encoder == 66_036


def test_a_registered_format_appends_its_artifacts(checkpoint, tmp_path):
    """A format is one registered step: it writes into the staging directory and returns
    records, which are measured, reported and listed like the built-in ones."""
    import shutil

    from csideploy.gates.numerics import encoder_numerics

    def probe(context, precision, written):
        assert precision == "fp32" and written == []
        path = context.staging / "encoder.copy.onnx"
        shutil.copyfile(context.staging / "encoder.onnx", path)
        codewords = OnnxRunner(path)(context.reference.csi)
        numerics = encoder_numerics(context.reference, context.split.decoder, codewords)
        info = inspect_onnx(path)
        return ArtifactResult(path=context.final_path(path.name), format="onnx",
                              role="encoder", side="UE", precision="fp32",
                              bytes=info.num_bytes, sha256=info.sha256, numerics=numerics,
                              gates=(), inputs=info.inputs, outputs=info.outputs)

    register_step("probe", encoder=probe)
    FORMATS["probe"] = Format("probe", ".onnx", "onnxruntime", export=probe)

    try:
        result = run_export(ExportConfig(model="clnet", checkpoint=str(checkpoint),
                                         formats=("onnx", "probe"), out=str(tmp_path / "o"),
                                         latency_runs=5, eval_samples=32))
    finally:
        FORMAT_STEPS.pop("probe")
        FORMATS.pop("probe")
    record = result.artifact("encoder.copy.onnx")
    assert record.numerics.max_abs_error < 1e-4 and record.latency is not None
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert "encoder.copy.onnx" in [a["file"] for a in manifest["artifacts"]]
    numerics = json.loads((result.out_dir / "numerics.json").read_text())
    assert "encoder.copy.onnx" in [a["file"] for a in numerics["artifacts"]]
