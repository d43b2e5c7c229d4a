"""Export of models that quantize their own codeword (LORA, DualNet-MP), the DualNet-MP decoder
with its uplink side input, and the BN-folded export copy of float-codeword encoders."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from export_test_models import small_model

from csideploy.bundle.verify import verify_bundle
from csideploy.calibration.dataset_writer import write_synthetic_dataset
from csideploy.calibration.paired import write_paired_dataset
from csideploy.errors import DataError, ToleranceError
from csideploy.formats.onnx import OnnxRunner, export_onnx
from csideploy.gates.numerics import FloatReference, NmseConvention
from csideploy.models import build
from csideploy.models.checkpoint import save_checkpoint
from csideploy.models.zoo.dualnet_mp import CircularConv2d, feedback_bits
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.run import run_export
from csideploy.pipeline.steps import (
    EXPORT_MODULE_RELATIVE_TOLERANCE,
    export_module_step,
    split_step,
)

FAST = {"eval_samples": 32, "calib_samples": 32, "latency_runs": 0, "formats": ("onnx",)}


def _checkpoint(tmp_path, model, name):
    return str(save_checkpoint(tmp_path / f"{name}.pt", model))


@pytest.fixture(scope="module")
def lora_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    model = build("lora", 64, quantizer="lsq", bits=8, blocks=2, hidden=64)
    model.encoder.quantizer.set_parameters(0.02)
    config = ExportConfig(
        model="lora",
        checkpoint=_checkpoint(tmp, model, "lora"),
        int8="static",
        out=str(tmp / "out"),
        **{**FAST, "formats": ("onnx", "tflite")},
    )
    return model, run_export(config)


def test_lora_handset_graph_outputs_the_integer_codeword(lora_export):
    model, result = lora_export
    encoder = result.out_dir / "encoder.onnx"
    graph = onnx.load(str(encoder)).graph
    assert [o.name for o in graph.output] == ["codeword"]
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    csi = np.random.default_rng(1).random((32, 2, 32, 32), dtype=np.float32)
    levels = OnnxRunner(encoder).run_outputs(csi)[0]
    with torch.no_grad():
        expected = model.encoder(torch.from_numpy(csi)).numpy()
    assert levels.dtype == np.int8
    assert np.mean(levels != expected) <= 1e-3 and np.max(np.abs(levels - expected)) <= 1


def test_lora_tflite_files_output_the_integer_codeword(lora_export):
    _, result = lora_export
    for file in ("encoder.tflite", "encoder.int8.tflite"):
        artifact = result.artifact(file)
        assert [(t.name, t.dtype) for t in artifact.outputs] == [("codeword", "int8")]
        assert all(g.passed for g in artifact.gates)
    assert result.artifact("encoder.tflite").numerics.level_mismatch <= 1e-3


def test_lora_manifest_records_scale_zero_point_and_bits(lora_export):
    model, result = lora_export
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    (part,) = manifest["codeword"]["parts"]
    spec = model.encoder.quantizer.spec()
    assert part["quantization"]["scale"] == pytest.approx(spec.scale)
    assert part["quantization"]["zero_point"] == spec.zero_point
    assert (part["dtype"], part["bits"], part["length"]) == ("int8", 8, 32)
    assert manifest["feedback"]["bits_per_report"] == {"transmitted": 8 * 32}
    fp32 = result.artifact("encoder.onnx")
    assert fp32.numerics.level_mismatch is not None and fp32.gates[0].passed
    assert fp32.gates[0].name == "codeword level mismatch (fraction)"
    assert verify_bundle(result.out_dir).ok


@pytest.fixture(scope="module")
def dualnet_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dualnet")
    torch.manual_seed(0)
    model = build("dualnet-mp", 16)
    config = ExportConfig(
        model="dualnet-mp",
        checkpoint=_checkpoint(tmp, model, "dual"),
        int8="static",
        out=str(tmp / "out"),
        **FAST,
    )
    return model, run_export(config)


def test_dualnet_handset_graph_has_three_integer_outputs(dualnet_export):
    model, result = dualnet_export
    graph = onnx.load(str(result.out_dir / "encoder.onnx")).graph
    types = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    assert types == {
        "magnitude": onnx.TensorProto.INT8,
        "phase": onnx.TensorProto.INT8,
        "sign": onnx.TensorProto.UINT8,
    }
    assert [o.name for o in graph.output] == ["magnitude", "phase", "sign"]
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    outputs = manifest["artifacts"][0]["outputs"]
    assert [(o["name"], o["dtype"]) for o in outputs] == [
        ("magnitude", "int8"),
        ("phase", "int8"),
        ("sign", "uint8"),
    ]
    bits = feedback_bits(model)
    assert manifest["feedback"]["bits_per_report"] == {"transmitted": bits.total}
    assert manifest["codeword"]["feedback_bits"]["phase"] == bits.phase
    golden = result.out_dir / "golden" / "encoder.onnx.test" / "test_data_set_0"
    assert sorted(p.name for p in golden.iterdir()) == [
        "input_0.pb",
        "output_0.pb",
        "output_1.pb",
        "output_2.pb",
    ]
    assert verify_bundle(result.out_dir).ok


def test_dualnet_onnx_levels_match_torch(dualnet_export):
    model, result = dualnet_export
    csi = np.random.default_rng(2).random((32, 2, 32, 32), dtype=np.float32)
    outputs = OnnxRunner(result.out_dir / "encoder.onnx").run_outputs(csi)
    with torch.no_grad():
        flat = model.encoder(torch.from_numpy(csi)).numpy()
    got = np.concatenate([y.astype(np.float32) for y in outputs], axis=1)
    assert np.mean(got != flat) <= 1e-3
    assert np.array_equal(outputs[2], flat[:, -outputs[2].shape[1] :].astype(np.uint8))


def test_dualnet_decoder_takes_the_uplink_csi(dualnet_export):
    model, result = dualnet_export
    decoder = result.out_dir / "decoder.onnx"
    assert [i.name for i in onnx.load(str(decoder)).graph.input] == ["codeword", "ul_csi"]
    rng = np.random.default_rng(3)
    dl, ul = (rng.random((8, 2, 32, 32), dtype=np.float32) for _ in range(2))
    with torch.no_grad():
        codeword = model.encoder(torch.from_numpy(dl))
        expected = model.decoder(codeword, torch.from_numpy(ul)).numpy()
        without = model.decoder(codeword).numpy()
    got = OnnxRunner(decoder).run_outputs(codeword.numpy(), ul)[0]
    assert np.max(np.abs(got - expected)) <= 1e-4
    assert np.max(np.abs(got - without)) > 1e-3  # the side input is really used
    assert result.evaluation.to_dict()["paired_uplink"] is True


def test_circular_padding_exports_to_onnx(tmp_path):
    torch.manual_seed(0)
    conv = CircularConv2d(2, 4, 7).eval()
    path = tmp_path / "cconv.onnx"
    export_onnx(
        conv, path, role="encoder", input_name="x", output_name="y", input_shape=(2, 32, 32)
    )
    x = np.random.default_rng(4).random((4, 2, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = conv(torch.from_numpy(x)).numpy()
    assert expected.shape == (4, 4, 32, 32)
    assert np.max(np.abs(OnnxRunner(path)(x) - expected)) <= 1e-5


def test_dualnet_eval_file_must_hold_the_uplink(tmp_path):
    files = write_synthetic_dataset(tmp_path / "plain", n=60, seed=0, progress=False)
    model = build("dualnet-mp", 16)
    config = ExportConfig(
        model="dualnet-mp",
        checkpoint=_checkpoint(tmp_path, model, "dual"),
        eval_data=str(files["test"]),
        out=str(tmp_path / "out"),
        **{**FAST, "eval_samples": 16},
    )
    with pytest.raises(DataError, match="HT_UL"):
        run_export(config)
    assert not (tmp_path / "out").exists()


def test_dualnet_eval_on_a_paired_file(tmp_path):
    files = write_paired_dataset(tmp_path / "paired", n=150, seed=0).files
    model = build("dualnet-mp", 16)
    config = ExportConfig(
        model="dualnet-mp",
        checkpoint=_checkpoint(tmp_path, model, "dual"),
        eval_data=str(files["test"]),
        out=str(tmp_path / "out"),
        **{**FAST, "eval_samples": 16},
    )
    result = run_export(config)
    assert result.evaluation.source == str(files["test"])
    assert all(g.passed for a in result.artifacts for g in a.gates)


def test_export_copy_has_batchnorm_folded_with_parity(tmp_path):
    model = small_model("clnet", 64)
    split = split_step(model)
    assert split.folded and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in split.export_encoder.modules()
    )
    config = ExportConfig(
        model="clnet",
        checkpoint=_checkpoint(tmp_path, model, "clnet"),
        out=str(tmp_path / "out"),
        **FAST,
    )
    result = run_export(config)
    module = result.surgery["export_module"]
    assert module["bn_folded"] == list(split.folded)
    assert module["gate"]["passed"] and module["gate"]["limit"] == EXPORT_MODULE_RELATIVE_TOLERANCE
    assert 0 < module["max_abs_error"] < 1e-4


def test_export_module_gate_refuses_a_wrong_copy():
    split = split_step(small_model("clnet", 64))
    codewords = np.random.default_rng(5).normal(size=(16, 32)).astype(np.float32)
    damaged = codewords.copy()
    damaged[0, 0] += 1e-3 * float(np.abs(codewords).max())
    reference = FloatReference(
        csi=np.zeros((16, 2, 32, 32), np.float32),
        codewords=codewords,
        reconstruction=np.zeros((16, 2, 32, 32), np.float32),
        nmse_db=0.0,
        convention=NmseConvention.named(),
        exported_codewords=damaged,
    )
    with pytest.raises(ToleranceError, match="export copy"):
        export_module_step(split, reference)


def test_hard_sigmoid_encoder_files_have_no_sigmoid(tmp_path):
    model = small_model("clnet", 64)
    config = ExportConfig(
        model="clnet",
        checkpoint=_checkpoint(tmp_path, model, "clnet"),
        hard_sigmoid="encoder",
        out=str(tmp_path / "out"),
        **{**FAST, "formats": ("onnx", "tflite")},
    )
    result = run_export(config)
    assert result.surgery["hard_sigmoid"]["replaced"]
    assert "Sigmoid" not in result.artifact("encoder.onnx").op_counts
    ops = result.artifact("encoder.tflite").details["ops"]
    assert ops and "LOGISTIC" not in ops
