"""Quantization-aware fine-tuning (`--qat-epochs`) on the shipped trained default (CLNet CR
1/4 indoor): the TFLite INT8 encoder's FC layers are fine-tuned with fake quantization, the
converted graph is re-measured on the calibration set and written when it fits; the float
decoder is never trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from csideploy.calibration.synthetic import generate
from csideploy.cli import main as cli
from csideploy.formats.tflite import inspect_tflite
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.steps import load_step, split_step
from csideploy.quantize.qat import QatRejected, QatReport, QatSettings, qat_converter
from csideploy.quantize.tflite_pt2e import pt2e_export_tflite

FAST = ["--eval-samples", "100", "--calib-samples", "64"]
FC = "replace_efc"


@pytest.fixture(scope="module")
def split():
    torch.set_num_threads(1)
    loaded, _ = load_step(ExportConfig(model="clnet"))
    return split_step(loaded.model)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_qat_moves_the_encoder_weights_and_never_the_decoder(split, tmp_path):
    """The library path: 1 epoch on 32 samples, FC annotated. Rejected by the re-measurement,
    nothing is written; accepted, the file has an int8 FULLY_CONNECTED weight. The decoder
    and the float encoder handed in are unchanged, and the fine-tuned weights moved."""
    decoder_before, encoder_before = _state(split.decoder), _state(split.export_encoder)
    measured = []

    def accept(encode):
        codewords = encode(generate(8, scenario="indoor", seed=5))
        measured.append(codewords.shape)
        return {"delta_nmse_db": 0.0}, True

    def export(accept):
        report = QatReport()
        settings = QatSettings(
            epochs=1, data=generate(32, scenario="indoor", seed=4), decoder=split.decoder,
            source="test", accept=accept,
        )  # fmt: skip
        artifact = pt2e_export_tflite(
            split.export_encoder, tmp_path / "qat.tflite", precision="int8",
            calibration=generate(32, scenario="indoor", seed=6), io="float", layers=(FC,),
            convert=qat_converter(settings, report),
        )  # fmt: skip
        return artifact, report

    with pytest.raises(QatRejected, match="delta_nmse_db"):
        export(lambda encode: ({"delta_nmse_db": 9.9}, False))
    assert not (tmp_path / "qat.tflite").exists()  # a rejected graph writes nothing
    artifact, report = export(accept)
    assert measured == [(8, 512)]
    assert report.accepted and report.epochs == 1 and report.samples == 32
    assert len(report.losses) == 1 and report.losses[0] > 0
    fc_weight = next(k for k in report.weight_change if FC in k and "weight" in k)
    assert report.weight_change[fc_weight] > 0
    info = inspect_tflite(artifact.path)
    assert "int8" in info.weight_dtypes and "FULLY_CONNECTED" in info.ops
    for key, value in _state(split.decoder).items():
        assert torch.equal(value, decoder_before[key]), key
    for key, value in _state(split.export_encoder).items():
        assert torch.equal(value, encoder_before[key]), key


def test_qat_export_writes_the_default_fc_in_int8(tmp_path):
    """The CLI path on the default: one epoch on 256 training samples; the re-measured FC
    fits the layer budget, the TFLite INT8 file holds it in int8 (4x smaller) and passes the
    gates, and numerics.json / manifest.json record what QAT did."""
    data = tmp_path / "train.npy"
    np.save(data, generate(256, scenario="indoor", seed=9))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "export", "--model", "clnet", "--int8", "--int8-layers", "accuracy", "--format",
        "tflite", *FAST, "--qat-epochs", "1", "--qat-lr", "2e-4", "--qat-data", str(data),
        "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "qat epoch 1/1: train MSE" in result.output
    assert "; calibration ΔNMSE +0.0" in result.output and " -> kept" in result.output
    assert "computes in float" not in result.output
    numerics = json.loads((out / "numerics.json").read_text())
    int8 = next(a for a in numerics["artifacts"] if a["file"] == "encoder.int8.tflite")
    assert abs(int8["delta_nmse_db"]) <= 0.1, int8["delta_nmse_db"]
    assert [g["passed"] for g in int8["gates"]] == [True, True]
    manifest = json.loads((out / "manifest.json").read_text())
    details = next(a for a in manifest["artifacts"] if a["file"] == "encoder.int8.tflite")
    qat = details["details"]["qat"]
    assert qat["epochs"] == 1 and qat["samples"] == 256 and qat["data"] == str(data)
    assert qat["accepted"] and qat["calibration"]["delta_nmse_db"] <= 0.05
    assert any(layer.startswith(FC) for layer in qat["layers"])
    assert details["details"]["quantized_layers"] == qat["layers"]
    assert any(FC in name for name in qat["weight_change"])
    info = inspect_tflite(out / "encoder.int8.tflite")
    assert "int8" in info.weight_dtypes and "FULLY_CONNECTED" in info.ops
    assert (out / "encoder.int8.tflite").stat().st_size < 0.3 * (
        out / "encoder.tflite"
    ).stat().st_size


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--qat-epochs", "-1"], "error: --qat-epochs must be an integer >= 0, got -1"),
        (["--qat-epochs", "1", "--format", "onnx"],
         "error: --qat-epochs tunes the TFLite INT8 encoder: add tflite to --format"),
        (["--qat-epochs", "1", "--int8-layers", "all"],
         "error: --qat-epochs fine-tunes the layer plan's static INT8"),
        (["--qat-epochs", "1", "--qat-data", "missing.npy"],
         "error: --qat-data missing.npy: no such file"),
        (["--qat-data", "missing.npy"], "error: --qat-data is only used with --qat-epochs N"),
    ],
)  # fmt: skip
def test_bad_qat_options_exit_2_with_one_line(tmp_path, extra, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["export", "--model", "clnet", "--int8", *extra, "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert not out.exists()
