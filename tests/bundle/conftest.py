"""A small real bundle: a CLNet CR 1/64 encoder exported to ONNX, golden vectors, manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from csideploy.bundle.assemble import ArtifactSpec, assemble_bundle
from csideploy.formats.onnx import export_onnx
from csideploy.models import build


def header() -> dict:
    return {
        "artifact_version": "1.2.3",
        "model": {
            "name": "clnet",
            "cr": 64,
            "codeword_length": 32,
            "checkpoint": {"sha256": "0" * 64, "source_format": "untrained", "file": None},
        },
        "preprocessing": [{"step": "scale", "description": "x / (2 max|x|) + 0.5"}],
        "feedback": {"codeword_length": 32, "bits_per_report": {"float32": 1024}},
        "calibration": {"source": "none", "samples": 0, "method": "none"},
        "tools": {"csideploy": "test"},
    }


def make_bundle(root: Path) -> Path:
    torch.manual_seed(0)
    model = build("clnet", 64)
    root.mkdir(parents=True)
    export_onnx(
        model.encoder,
        root / "encoder.onnx",
        role="encoder",
        input_name="csi",
        output_name="codeword",
        input_shape=(2, 32, 32),
    )
    export_onnx(
        model.decoder,
        root / "decoder.onnx",
        role="decoder",
        input_name="codeword",
        output_name="csi_hat",
        input_shape=(32,),
    )
    (root / "README.md").write_text("# model card\n")
    (root / "numerics.json").write_text("{}\n")
    spec = ArtifactSpec(
        file="encoder.onnx",
        format="onnx",
        precision="fp32",
        input={"name": "csi", "shape": ["N", 2, 32, 32], "dtype": "float32"},
        output={"name": "codeword", "shape": ["N", 32], "dtype": "float32"},
        tolerance=1e-4,
        opset=18,
    )
    inputs = np.random.default_rng(0).random((4, 2, 32, 32), dtype=np.float32)
    assemble_bundle(
        root,
        header=header(),
        artifacts=[spec],
        golden_inputs=inputs,
        ue_files=["encoder.onnx", "README.md", "numerics.json"],
        bs_files=["decoder.onnx"],
    )
    return root


@pytest.fixture(scope="session")
def pristine_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("pristine") / "clnet-cr64")


@pytest.fixture()
def bundle(pristine_bundle: Path, tmp_path: Path) -> Path:
    """A private copy each test may tamper with."""
    copy = tmp_path / pristine_bundle.name
    shutil.copytree(pristine_bundle, copy)
    return copy


REPO = Path(__file__).resolve().parents[2]
CRNET_64 = REPO / "tests/fixtures/official/crnet/in_64.pth"


@pytest.fixture(scope="session")
def exported_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export made on the fly: CRNet CR 1/64 (the authors' indoor weights), fp32 and
    static INT8 (int8 I/O TFLite), ONNX and TFLite, golden vectors, manifest."""
    from csideploy.pipeline.config import ExportConfig
    from csideploy.pipeline.run import run_export

    torch.set_num_threads(1)
    config = ExportConfig(
        model="crnet",
        checkpoint=str(CRNET_64),
        int8="static",
        formats=("onnx", "tflite"),
        eval_samples=64,
        calib_samples=32,
        latency_runs=3,
        out=str(tmp_path_factory.mktemp("export") / "crnet-cr64"),
        # every layer int8 and a full-integer TFLite file: int8 I/O whose scale and zero
        # point the contract tests tamper with; the gates stay open for that layout
        int8_layers="all",
        max_nmse_drop=float("inf"),
        min_codeword_sqnr=float("-inf"),
        max_fidelity_nmse=float("inf"),
    )
    return run_export(config).out_dir


@pytest.fixture()
def export_copy(exported_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the real export that a test may tamper with."""
    copy = tmp_path / exported_bundle.name
    shutil.copytree(exported_bundle, copy)
    return copy
