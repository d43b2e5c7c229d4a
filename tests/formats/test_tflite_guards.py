"""TFLite export guards: missing runtimes and converters, bad options and calibration, outputs
kept, unreadable files, and a conversion the converter takes without fixes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from csideploy import runner
from csideploy.errors import (
    CsiDeployError,
    DataError,
    MissingDependencyError,
    OutputExistsError,
    ShapeError,
)
from csideploy.formats.tflite import (
    TFLITE_EXTRA_MESSAGE,
    TfliteExportConfig,
    export_tflite,
    inspect_tflite,
)
from csideploy.quantize.tflite_pt2e import pt2e_export_tflite


def test_no_interpreter_names_every_package_tried(monkeypatch):
    monkeypatch.setattr(runner, "LITERT_PACKAGES", ("csideploy_missing_a", "csideploy_missing_b"))
    with pytest.raises(runner.Skip) as error:
        runner.load_litert()
    message = str(error.value)
    assert message.startswith("no LiteRT interpreter importable")
    assert "csideploy_missing_a: ModuleNotFoundError" in message
    assert "csideploy_missing_b: ModuleNotFoundError" in message


def test_missing_converter_names_the_tflite_extra(monkeypatch, tmp_path, encoders):
    for name in [m for m in sys.modules if m == "litert_torch" or m.startswith("litert_torch.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "litert_torch", None)
    with pytest.raises(MissingDependencyError) as error:
        export_tflite(encoders["clnet64"], tmp_path / "encoder.tflite", precision="fp32")
    assert str(error.value).startswith(TFLITE_EXTRA_MESSAGE)
    assert not (tmp_path / "encoder.tflite").exists()


def test_importing_the_export_modules_does_not_import_the_converter():
    code = (
        "import sys, csideploy.formats.tflite, csideploy.quantize.tflite_pt2e, csideploy.runner; "
        "loaded = [m for m in ('litert_torch', 'torchao', 'ai_edge_litert') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp16"}, "precision must be one of"),
        ({"precision": "int8", "io": "uint8"}, "io must be one of"),
        ({"precision": "fp32", "layout": "NHWC"}, "layout must be one of"),
        ({"precision": "fp32", "input_name": "c si"}, "input_name"),
        ({"precision": "fp32", "input_name": "x", "output_name": "x"}, "must differ"),
    ],
)
def test_config_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        TfliteExportConfig(**options)


def test_config_io_applies_to_int8_only():
    assert TfliteExportConfig("int8").io_dtype == "int8"
    assert TfliteExportConfig("int8", io="float").io_dtype == "float32"
    assert TfliteExportConfig("dynamic").io_dtype == "float32"
    assert TfliteExportConfig("fp32", layout="nhwc").input_shape == (1, 32, 32, 2)


def test_int8_export_checks_calibration_before_converting(tmp_path, encoders):
    encoder = encoders["clnet64"]
    out = tmp_path / "encoder.int8.tflite"
    with pytest.raises(DataError, match="needs calibration"):
        pt2e_export_tflite(encoder, out, precision="int8")
    with pytest.raises(ShapeError, match=r"calibration: expected shape \(N, 2, 32, 32\)"):
        pt2e_export_tflite(encoder, out, precision="int8", calibration=np.zeros((4, 32, 32, 2)))
    bad = np.zeros((4, 2, 32, 32), dtype=np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        pt2e_export_tflite(encoder, out, precision="int8", calibration=bad)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_unless_overwrite(tmp_path, encoders):
    out = tmp_path / "encoder.tflite"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        export_tflite(encoders["clnet64"], out, precision="fp32")
    assert out.read_bytes() == b"keep me"


def test_unreadable_files_are_data_errors(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError):
        inspect_tflite(junk)


def test_quantized_precision_without_a_quantizer_is_refused(tmp_path, encoders, calibration):
    """The format converts float only; INT8 comes from an INT8 method's converter."""
    out = tmp_path / "encoder.int8.tflite"
    with pytest.raises(CsiDeployError, match="int8 TFLite needs a quantizing converter"):
        export_tflite(encoders["clnet64"], out, precision="int8", calibration=calibration)
    assert list(tmp_path.iterdir()) == []


def test_clnet_int8_conversion_leaves_the_converter_nothing_to_fix(
    tmp_path, encoders, calibration, capfd
):
    """The annotation gives the converter a graph it takes as is: no trivial rescale around
    the channel pool's concatenation, no second quantizer on the attention's sigmoid."""
    pt2e_export_tflite(
        encoders["clnet64"], tmp_path / "e.tflite", precision="int8", calibration=calibration
    )
    err = capfd.readouterr().err
    assert "Remove trivial `rescale` op" not in err
    assert "quantizer's output has another quantizer" not in err
