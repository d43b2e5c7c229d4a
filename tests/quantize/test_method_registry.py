"""The INT8 method registry: declared methods, their file names, and what the export refuses."""

from __future__ import annotations

import subprocess
import sys

import pytest

from csideploy.errors import CsiDeployError
from csideploy.formats import FORMATS
from csideploy.formats.tflite import FILE_NAMES as TFLITE_FILES
from csideploy.pipeline.config import ExportConfig
from csideploy.quantize.base import (
    QUANT_METHODS,
    QuantMethod,
    calibration_methods,
    encoder_file,
    get_method,
    method_names,
    register_method,
)


def test_declared_methods_and_their_calibration():
    assert method_names() == ("static", "dynamic")
    assert calibration_methods() == ("minmax", "entropy", "percentile")
    assert get_method("static").needs_calibration and not get_method("dynamic").needs_calibration
    assert [get_method(m).precision for m in method_names()] == ["int8", "dynamic"]


@pytest.mark.parametrize("method", ["static", "dynamic"])
def test_file_names_come_from_the_registry(method):
    """Every format's encoder file for a method is named by the registry; the TFLite writer's
    own default names agree."""
    declared = get_method(method)
    names = {encoder_file(fmt.suffix, declared.precision) for fmt in FORMATS.values()}
    assert names == {f"encoder.{declared.file_infix}{fmt.suffix}" for fmt in FORMATS.values()}
    assert encoder_file(".tflite", declared.precision) == TFLITE_FILES[declared.precision]
    assert encoder_file(".onnx", "fp32") == "encoder.onnx"
    with pytest.raises(CsiDeployError, match="no INT8 method writes precision 'int4'"):
        encoder_file(".onnx", "int4")


def test_unknown_method_and_misplaced_calibration_are_refused():
    with pytest.raises(CsiDeployError, match=r"--int8 must be one of static, dynamic, got 'w4'"):
        ExportConfig(model="clnet", int8="w4")
    with pytest.raises(CsiDeployError, match=r"--calib is only used by static INT8"):
        ExportConfig(model="clnet", int8="dynamic", calib="calib.npy")
    with pytest.raises(CsiDeployError, match="--calib-method must be one of minmax, entropy, perc"):
        ExportConfig(model="clnet", int8="static", calib_method="mse")


def test_a_registered_method_becomes_a_choice_and_a_file_name():
    register_method(QuantMethod("w8a16", precision="w8a16", file_infix="w8a16"))
    try:
        assert "w8a16" in method_names()
        assert get_method("w8a16").file_name(".onnx") == "encoder.w8a16.onnx"
        # No format lists the precision, so the export refuses it up front.
        with pytest.raises(CsiDeployError, match="format onnx cannot write w8a16 INT8"):
            ExportConfig(model="clnet", int8="w8a16")
    finally:
        QUANT_METHODS.pop("w8a16")


def test_the_command_line_reads_its_choices_without_loading_numpy_onnx_or_torch():
    code = (
        "import sys, csideploy.cli; "
        "loaded = [m for m in ('numpy', 'onnx', 'torch') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
