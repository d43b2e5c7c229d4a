"""Calibration sets for static INT8: every method runs, degenerate sets are refused,
mismatched sets warn, and the default calibration comes from the --eval source."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from int8_data import COST2100_INDOOR, CRNET_INDOOR

from csideploy.calibration.io import load_csi
from csideploy.cli import main as cli
from csideploy.errors import DataError
from csideploy.formats.onnx import OnnxRunner, export_onnx
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.results import CsiSet
from csideploy.pipeline.steps import CalibrationWarning, calibration_step, load_step, split_step
from csideploy.quantize.calibration_data import (
    check_calibration_set,
    equal_batch_size,
    mismatch_warning,
)
from csideploy.quantize.onnx_qdq import quantize_static_onnx


@pytest.fixture(scope="module")
def indoor() -> np.ndarray:
    return load_csi(str(COST2100_INDOOR))


@pytest.fixture(scope="module")
def crnet_encoder(tmp_path_factory) -> onnx.ModelProto:
    """The CRNet CR 1/64 indoor encoder (real weights) as float ONNX."""
    loaded, _ = load_step(ExportConfig(model="crnet", checkpoint=str(CRNET_INDOOR)))
    split = split_step(loaded.model)
    path = tmp_path_factory.mktemp("crnet") / "encoder.onnx"
    export_onnx(split.export_encoder, path, role="encoder", input_name="csi",
                output_name="codeword", input_shape=(2, 32, 32))
    return path


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_every_calibration_method_runs_on_a_count_that_is_no_multiple_of_the_batch(
    method, crnet_encoder, indoor, tmp_path
):
    # 80 samples with batches of 64 used to end in a batch of 16: entropy and percentile
    # stacked the batches and crashed ("inhomogeneous shape").
    out = tmp_path / "q.onnx"
    graph = quantize_static_onnx(crnet_encoder, out, indoor[:80], method=method,
                                 workdir=tmp_path)
    assert graph.params.calibration_method == method
    assert graph.params.calibration_samples == 80
    codeword = OnnxRunner(out)(indoor[80:])
    assert codeword.shape == (80, 32) and np.isfinite(codeword).all()
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)


def test_equal_batch_size_divides_the_sample_count():
    assert equal_batch_size(80, 64) == 40
    assert equal_batch_size(256, 64) == 64
    assert equal_batch_size(83, 64) == 1
    assert equal_batch_size(10, 64) == 10


def test_a_constant_calibration_set_is_refused(indoor):
    constant = np.full((64, 2, 32, 32), 0.5, dtype=np.float32)
    with pytest.raises(DataError, match="zero variance"):
        check_calibration_set(constant, "const.npy")
    nearly = constant + np.float32(1e-6) * np.random.default_rng(0).standard_normal(
        constant.shape
    ).astype(np.float32)
    with pytest.raises(DataError, match="near-zero variance"):
        check_calibration_set(nearly, "nearly.npy")
    repeated = np.repeat(indoor[:1], 40, axis=0)
    with pytest.raises(DataError, match="all 40 samples are identical"):
        check_calibration_set(repeated, "one.npy")
    check_calibration_set(indoor[:40], "cost2100")  # real CSI passes


def test_the_cli_refuses_a_degenerate_calibration_file_and_writes_nothing(tmp_path):
    calib = tmp_path / "const.npy"
    np.save(calib, np.full((40, 2, 32, 32), 0.5, dtype=np.float32))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "export", "--model", "crnet", "--checkpoint", str(CRNET_INDOOR), "--int8",
        "--calib", str(calib), "--calib-samples", "40", "--format", "onnx",
        "--out", str(out),
    ])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: calibration set {calib} has zero variance (std 0 over 40 samples, at least "
        "0.0001 needed): it would fix every activation range to ~0; calibrate on real CSI"
    )
    assert "Traceback" not in result.output
    assert not out.exists()


def test_a_calibration_set_unlike_the_evaluation_set_warns_naming_both(indoor, tmp_path):
    from csideploy.calibration import synthetic

    # a quarter of the spread around 0.5 (RMS ~0.006, as data scaled once per data set have;
    # COST2100-model data ~0.028)
    weak = 0.5 + 0.25 * (synthetic.default_calibration(64) - 0.5)
    message = mismatch_warning(weak, "synthetic indoor", indoor, "cost2100_indoor.mat")
    assert message is not None
    assert "synthetic indoor" in message and "cost2100_indoor.mat" in message
    assert mismatch_warning(indoor[:80], "a", indoor[80:], "b") is None

    evaluation = CsiSet("evaluation", "cost2100_indoor.mat", 80, indoor[80:])
    with warnings.catch_warnings(record=True) as caught:  # built-in data match COST2100's spread
        warnings.simplefilter("always")
        default = calibration_step(ExportConfig(model="crnet", int8="static"), evaluation)
    assert default.warning is None
    assert caught == []
    np.save(tmp_path / "weak.npy", weak)
    config = ExportConfig(model="crnet", int8="static", calib=str(tmp_path / "weak.npy"),
                          calib_samples=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        calibration = calibration_step(config, evaluation)
    assert [w.category for w in caught] == [CalibrationWarning]
    assert calibration.warning == str(caught[0].message)
    assert calibration.to_dict()["warning"] == calibration.warning


def test_default_calibration_comes_from_the_eval_file_after_the_evaluation_samples(indoor):
    config = ExportConfig(model="crnet", int8="static", eval_data=str(COST2100_INDOOR),
                          eval_samples=80)
    calibration = calibration_step(config)
    assert calibration.samples == 80
    assert calibration.source.endswith("(samples 80-159, after the evaluation set)")
    np.testing.assert_array_equal(calibration.data, indoor[80:160])


def test_too_few_samples_left_for_calibration_is_a_clear_error():
    config = ExportConfig(model="crnet", int8="static", eval_data=str(COST2100_INDOOR),
                          eval_samples=140)
    with pytest.raises(DataError, match="20 remain for calibration, fewer than 32; pass "
                       "--calib or lower --eval-samples"):
        calibration_step(config)
