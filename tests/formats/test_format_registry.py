"""The format registry: what each format declares, and what the export refuses because of it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from csideploy.errors import CsiDeployError
from csideploy.formats import FORMATS, Format, get_format
from csideploy.formats.base import register_format
from csideploy.pipeline.config import ExportConfig


def test_every_format_declares_suffix_runtime_and_int8():
    declared = {name: (f.suffix, f.runtime, f.int8) for name, f in FORMATS.items()}
    assert declared == {
        "onnx": (".onnx", "onnxruntime", ("int8", "dynamic")),
        "tflite": (".tflite", "litert", ("int8", "dynamic")),
        "pte": (".pte", "executorch", ("int8", "dynamic")),
    }
    assert FORMATS["tflite"].extra == "tflite" and FORMATS["onnx"].extra is None


def test_unknown_format_names_the_known_ones():
    known = "unknown export format 'bogus'; known: onnx, pte, tflite"
    with pytest.raises(CsiDeployError, match=known):
        get_format("bogus")


def test_an_int8_method_the_format_cannot_write_is_refused():
    """A format that lists no dynamic INT8 rejects --int8 dynamic before anything runs."""
    register_format(Format("static-only", ".bin", "onnxruntime", export=print, int8=("int8",)))
    try:
        ExportConfig(model="clnet", int8="static", formats=("static-only",))
        with pytest.raises(CsiDeployError, match=r"format static-only cannot write dynamic INT8 "
                                                 r"\(supported: int8\)"):
            ExportConfig(model="clnet", int8="dynamic", formats=("static-only",))
    finally:
        FORMATS.pop("static-only")


def test_registering_a_different_format_under_a_taken_name_fails():
    with pytest.raises(ValueError, match="'onnx' is registered twice"):
        register_format(Format("onnx", ".x", "onnxruntime", export=print))
    assert FORMATS["onnx"].suffix == ".onnx"


def test_cli_refuses_an_unknown_format_with_exit_2(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "csideploy.cli", "export", "--model", "clnet",
         "--format", "onnx,bogus", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: unknown export format 'bogus'; known: onnx, pte, tflite"
    )
    assert "Traceback" not in done.stderr and not out.exists()
