"""TFLite export (fp32, dynamic-range, full-integer INT8) run on LiteRT.

Every artifact is converted once per module (conversions take seconds) and run through the
real LiteRT interpreter.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

from csideploy import runner
from csideploy.bundle.execute import run_artifact_outputs, run_model_outputs
from csideploy.formats.tflite import (
    FILE_NAMES,
    TfliteArtifact,
    TfliteExportConfig,
    inspect_tflite,
)
from csideploy.metrics import sqnr_db
from csideploy.models.ue_graph import flat_codeword
from csideploy.quantize.tflite_pt2e import pt2e_export_tflite
from csideploy.runner import dequantize, quantize


def encode_csi(path, csi: np.ndarray) -> np.ndarray:
    """Float codewords (N, M) of NCHW CSI, as the export's gate runs a .tflite file."""
    return flat_codeword(run_artifact_outputs("litert", path, csi))


def open_litert(path, threads: int = 1):
    """The runner's LiteRT adapter for `path` (batch 1)."""
    return runner.open_model("litert", path, threads, 1)


def _torch_codewords(encoder: nn.Module, csi: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return encoder(torch.from_numpy(csi)).numpy()


@pytest.fixture(scope="module")
def artifact(
    tmp_path_factory: pytest.TempPathFactory,
    encoders: dict[str, nn.Module],
    calibration: np.ndarray,
) -> Callable[..., TfliteArtifact]:
    """Convert on first request, then reuse: artifact(model, precision, io=..., layout=...)."""
    cache: dict[tuple[str, str, str, str], TfliteArtifact] = {}
    out_dir = tmp_path_factory.mktemp("tflite")

    def get(
        model: str, precision: str, *, io: str = "int8", layout: str = "nchw"
    ) -> TfliteArtifact:
        key = (model, precision, io, layout)
        if key not in cache:
            path = out_dir / f"{model}-{io}-{layout}-{FILE_NAMES[precision]}"
            cache[key] = pt2e_export_tflite(
                encoders[model],
                path,
                precision=precision,
                calibration=calibration if precision == "int8" else None,
                io=io,
                layout=layout,
            )
        return cache[key]

    return get


# --- fp32 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["clnet64", "crnet32"])
def test_fp32_codeword_matches_torch(artifact, encoders, evaluation, model):
    result = artifact(model, "fp32")
    expected = _torch_codewords(encoders[model], evaluation)
    codewords = encode_csi(result.path, evaluation)
    assert codewords.shape == expected.shape
    assert np.abs(codewords - expected).max() <= 1e-4
    assert result.io_dtype == "float32"
    assert result.input.shape == (1, 2, 32, 32)
    assert result.output.shape == (1, expected.shape[1])
    assert (result.input.name, result.output.name) == ("csi", "codeword")
    assert result.outputs == (result.output,)
    assert result.weight_dtypes == ("float32",)
    assert result.float_ops == result.ops and "CONV_2D" in result.ops


def test_artifact_records_size_and_hash(artifact):
    result = artifact("clnet64", "fp32")
    data = result.path.read_bytes()
    assert result.num_bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.converter.startswith("litert-torch ")
    assert result.calibration_samples is None
    summary = result.to_dict()
    assert summary["path"] == str(result.path)
    assert summary["input"]["shape"] == (1, 2, 32, 32)
    assert summary["outputs"] == [summary["output"]] and summary["output"]["name"] == "codeword"
    assert inspect_tflite(result.path).ops == result.ops
    leftovers = [p.name for p in result.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


# --- full-integer INT8 ----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["clnet64", "crnet32"])
def test_int8_has_integer_io_and_tracks_torch(artifact, encoders, evaluation, model):
    result = artifact(model, "int8")
    litert = open_litert(result.path)
    assert litert.inputs[0]["dtype"] == litert.outputs[0]["dtype"] == "int8"
    assert [spec["name"] for spec in litert.outputs] == ["codeword"]
    scale, zero_point = litert.inputs[0]["scale"], litert.inputs[0]["zero_point"]
    assert (result.input.scale, result.input.zero_point) == (pytest.approx(scale), zero_point)
    assert result.input.dtype == result.output.dtype == result.io_dtype == "int8"
    assert result.output.scale > 0 and -128 <= result.output.zero_point <= 127
    # The input quantization covers the CSI range: the round trip loses at most one step.
    step = result.input.scale
    zero_point = result.input.zero_point
    restored = dequantize(quantize(evaluation, step, zero_point, np.int8), step, zero_point)
    assert np.abs(restored - evaluation).max() <= step
    assert result.weight_dtypes == ("int8",)
    assert result.float_ops == ()
    assert result.calibration_samples == 64

    expected = _torch_codewords(encoders[model], evaluation)
    codewords = encode_csi(result.path, evaluation)
    assert sqnr_db(expected, codewords) > 20
    assert result.num_bytes < 0.4 * artifact(model, "fp32").num_bytes


def test_int8_run_raw_is_the_quantized_contract(artifact, evaluation):
    """A handset feeding int8 buffers gets the int8 codeword that the runner dequantizes."""
    result = artifact("clnet64", "int8")
    model = open_litert(result.path)
    x = quantize(evaluation[:1], result.input.scale, result.input.zero_point, np.int8)
    (raw,) = model([x])
    assert raw.dtype == np.int8 and raw.shape == result.output.shape
    dequantized = dequantize(raw, result.output.scale, result.output.zero_point)
    (floats,) = run_model_outputs(model, evaluation[:1], None, result.path)
    np.testing.assert_allclose(floats, dequantized, rtol=0, atol=1e-7)


def test_int8_float_io_wraps_the_same_integer_graph(artifact, evaluation):
    integer_io = artifact("clnet64", "int8")
    float_io = artifact("clnet64", "int8", io="float")
    model = open_litert(float_io.path)
    assert model.inputs[0]["dtype"] == model.outputs[0]["dtype"] == "float32"
    assert float_io.io_dtype == "float32" and float_io.input.scale is None
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(float_io.ops)
    assert float_io.float_ops == ()
    # Same quantized graph: results agree to one output step.
    step = integer_io.output.scale
    difference = np.abs(
        encode_csi(float_io.path, evaluation) - encode_csi(integer_io.path, evaluation)
    )
    assert difference.max() <= step * 1.01


def test_float_io_file_converts_back_to_integer_io(artifact, evaluation, tmp_path):
    """The fallback for a converter that hands back float I/O: the boundary moves to int8."""
    from csideploy.formats.tflite import import_litert
    from csideploy.formats.tflite.interface import set_interface

    integer_io = artifact("clnet64", "int8")
    float_io = artifact("clnet64", "int8", io="float")
    converted = set_interface(
        import_litert(), float_io.path.read_bytes(), TfliteExportConfig("int8")
    )
    path = tmp_path / "back.int8.tflite"
    path.write_bytes(converted)
    info = inspect_tflite(path)
    assert (info.input.name, info.output.name) == ("csi", "codeword")
    assert info.input == integer_io.input and info.outputs == integer_io.outputs
    assert "DEQUANTIZE" not in info.ops
    assert info.op_count == integer_io.op_count
    np.testing.assert_array_equal(
        encode_csi(path, evaluation), encode_csi(integer_io.path, evaluation)
    )


def test_int8_lists_ops_left_in_float(tmp_path, calibration):
    """An op with no int8 kernel stays float between DEQUANTIZE and QUANTIZE; it is listed."""

    class SineEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.fc = nn.Linear(2048, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.sin(self.conv(x)).reshape(x.shape[0], -1))

    torch.manual_seed(3)
    result = pt2e_export_tflite(
        SineEncoder().eval(), tmp_path / "sine.tflite", precision="int8", calibration=calibration
    )
    assert "SIN" in result.float_ops and "SIN" in result.ops
    assert {"CONV_2D", "FULLY_CONNECTED"} <= set(result.ops) - set(result.float_ops)
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(result.ops)
    assert result.input.dtype == "int8"


# --- dynamic range --------------------------------------------------------------------------


def test_dynamic_range_has_int8_weights_and_float_activations(artifact, encoders, evaluation):
    result = artifact("clnet64", "dynamic")
    assert result.weight_dtypes == ("int8",)
    assert result.io_dtype == result.input.dtype == result.output.dtype == "float32"
    assert "CONV_2D" in result.float_ops and "FULLY_CONNECTED" in result.float_ops
    assert result.num_bytes < 0.4 * artifact("clnet64", "fp32").num_bytes
    expected = _torch_codewords(encoders["clnet64"], evaluation)
    assert sqnr_db(expected, encode_csi(result.path, evaluation)) > 25


# --- layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_nhwc_signature_gives_nchw_results(artifact, evaluation, precision):
    nchw = artifact("clnet64", precision)
    nhwc = artifact("clnet64", precision, layout="nhwc")
    assert nhwc.input.shape == (1, 32, 32, 2) and nhwc.layout == "nhwc"
    channel_last = np.ascontiguousarray(evaluation.transpose(0, 2, 3, 1))
    direct = flat_codeword(run_model_outputs(open_litert(nhwc.path), channel_last, None, nhwc.path))
    tolerance = 1e-5 if precision == "fp32" else nchw.output.scale * 1.01
    assert np.abs(direct - encode_csi(nchw.path, evaluation)).max() <= tolerance
    np.testing.assert_array_equal(encode_csi(nhwc.path, evaluation), direct)


# --- runner ---------------------------------------------------------------------------------


def test_runner_rejects_csi_of_the_wrong_shape(artifact, evaluation):
    with pytest.raises(runner.Skip, match=r"per-sample shape \(1, 32, 32\)"):
        encode_csi(artifact("clnet64", "int8").path, evaluation[:, :1])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_quick_latency_runs_the_files_own_dtype(artifact, precision):
    result = runner.quick_latency("litert", artifact("clnet64", precision).path, 20, warmup=2)
    assert result.runtime.startswith("ai_edge_litert ")
    assert (result.threads, result.batch, result.runs, result.warmup) == (1, 1, 20, 2)
    assert 0 < result.min_us <= result.p50_us <= result.p90_us
    assert set(result.to_dict()) == {
        "runtime",
        "threads",
        "batch",
        "runs",
        "warmup",
        "p50_us",
        "p90_us",
        "min_us",
    }


def test_interpreter_selection_falls_back_to_the_next_runtime(artifact, evaluation, monkeypatch):
    path = artifact("clnet64", "fp32").path
    preferred = encode_csi(path, evaluation)
    monkeypatch.setattr(runner, "LITERT_PACKAGES", ("csideploy_no_such_runtime", "ai_edge_litert"))
    interpreter_class, package = runner.load_litert()
    assert package == "ai_edge_litert"
    assert interpreter_class.__module__ == "ai_edge_litert.interpreter"
    np.testing.assert_array_equal(encode_csi(path, evaluation), preferred)


def test_runner_needs_neither_torch_nor_the_converter(artifact):
    """A handset team checks an artifact with numpy and LiteRT alone."""
    path = artifact("clnet64", "int8").path
    code = (
        "import sys, numpy as np; from csideploy import runner; "
        f"model = runner.open_model('litert', {str(path)!r}, 1, 1); "
        "(codewords,) = runner.run_rows(model, np.full((3, 2, 32, 32), 0.5, np.float32)); "
        "assert codewords.shape == (3, 32), codewords.shape; "
        "loaded = [m for m in ('torch', 'litert_torch', 'torchao') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
