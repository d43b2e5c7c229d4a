"""ExecuTorch export: fp32 and INT8 `.pte` programs through XNNPACK, gated, bundled, verified,
timed by the standalone runner. Needs the 'executorch' extra (CI installs it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_test_models import small_model

pytest.importorskip("executorch.runtime", reason="the pte format needs csideploy[executorch]")

from csideploy import runner
from csideploy.bundle.verify import verify_bundle
from csideploy.models.checkpoint import save_checkpoint
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.run import run_export

REPO = Path(__file__).resolve().parents[2]
CRNET_64 = REPO / "tests/fixtures/official/crnet/in_64.pth"
FAST = {"calib_samples": 32, "eval_samples": 64, "latency_runs": 5}


def _export(root: Path, model: str, checkpoint: Path, **extra):
    torch.set_num_threads(1)
    config = ExportConfig(
        model=model,
        checkpoint=str(checkpoint),
        int8="static",
        formats=("pte",),
        out=str(root / model),
        **{**FAST, **extra},
    )
    return run_export(config)


@pytest.fixture(scope="module")
def crnet(tmp_path_factory):
    """The authors' CR 1/64 weights on 64 built-in samples, INT8 layers chosen by accuracy
    (no timing, so the choice is the same on every run), both gates open."""
    return _export(
        tmp_path_factory.mktemp("pte"), "crnet", CRNET_64, int8_layers="accuracy",
        max_nmse_drop=float("inf"), min_codeword_sqnr=float("-inf"),
        max_fidelity_nmse=float("inf"),
    )  # fmt: skip


@pytest.fixture(scope="module")
def clnet(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "clnet_cr32.pt"
    save_checkpoint(path, small_model("clnet", 32))
    # every layer in int8: the full XNNPACK INT8 program, whatever a layer plan would keep
    return _export(tmp_path_factory.mktemp("pte"), "clnet", path, int8_layers="all")


@pytest.mark.parametrize("which", ["crnet", "clnet"])
def test_fp32_and_int8_programs_pass_their_gates(which, request):
    result = request.getfixturevalue(which)
    fp32, int8 = result.artifact("encoder.pte"), result.artifact("encoder.int8.pte")
    assert (fp32.format, fp32.precision, int8.precision) == ("pte", "fp32", "int8")
    assert fp32.numerics.max_abs_error <= result.onnx_tolerance
    assert fp32.gates[0].passed and "max-abs" in fp32.gates[0].name
    assert int8.gates[0].passed and "NMSE" in int8.gates[0].name
    assert np.isfinite(int8.numerics.delta_nmse_db) and int8.numerics.delta_nmse_db < 3.0
    assert fp32.details["delegate_calls"] >= 1 and int8.details["delegate_calls"] >= 1
    assert int8.bytes < fp32.bytes / 2  # int8 weights
    assert fp32.latency is not None and fp32.latency.runtime.startswith("executorch")


def test_int8_program_follows_the_layer_plan(crnet):
    """Only the plan's static FC layer is int8 in the program (the convolutions stay float),
    and the loss stays small, unlike the every-layer program (see the gate test)."""
    int8 = crnet.artifact("encoder.int8.pte")
    # the FC layer itself, or its Linear inside the input-equalising wrapper
    assert int8.details["quantized_layers"] in (["encoder_fc"], ["encoder_fc.linear"])
    assert int8.numerics.delta_nmse_db < 0.3


def test_fp32_program_matches_torch(crnet):
    from csideploy.models.checkpoint import load_model

    x = np.random.default_rng(3).random((4, 2, 32, 32), dtype=np.float32)
    model = runner.open_model("executorch", crnet.out_dir / "encoder.pte", threads=1, batch=1)
    got = np.concatenate([model([x[k : k + 1]])[0] for k in range(len(x))])
    encoder = load_model("crnet", checkpoint=str(CRNET_64)).model.encoder.eval()
    with torch.no_grad():
        expected = encoder(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (4, 32)
    assert float(np.max(np.abs(got - expected))) <= 1e-4


def test_bundle_lists_the_programs_and_verifies(crnet):
    manifest = json.loads((crnet.out_dir / "manifest.json").read_text())
    entries = {a["file"]: a for a in manifest["artifacts"]}
    for file in ("encoder.pte", "encoder.int8.pte"):
        entry = entries[file]
        assert (entry["format"], entry["runtime"]) == ("pte", "executorch")
        assert entry["input"]["name"] == "input_0" and entry["input"]["shape"] == [1, 2, 32, 32]
        assert entry["output"]["name"] == "output_0" and entry["output"]["shape"] == [1, 32]
        assert (crnet.out_dir / entry["golden"]["outputs"]).is_file()
        assert file in {f["path"] for f in manifest["files"]}
    report = verify_bundle(crnet.out_dir)
    assert report.ok, report.failures
    checked = {(c.file, c.check) for c in report.checks if c.ok}
    assert {("encoder.pte", "golden"), ("encoder.int8.pte", "contract")} <= checked


def test_a_flipped_byte_in_a_program_fails_verify(crnet, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(crnet.out_dir, copy)
    path = copy / "encoder.int8.pte"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_bundle(copy)
    assert not report.ok
    assert "encoder.int8.pte" in {c.file for c in report.failures}


def test_runner_times_a_program(crnet):
    out = subprocess.run(
        [
            sys.executable,
            str(crnet.out_dir / "runner.py"),
            "--artifacts",
            str(crnet.out_dir / "encoder.int8.pte"),
            "--runtime",
            "executorch",
            "--runs",
            "5",
            "--warmup",
            "1",
            "--no-roofline",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    [result] = doc["results"]
    assert (result["runtime"], result["status"]) == ("executorch", "ok"), result
    assert result["latency_us"]["runs"] == 5 and result["latency_us"]["p50"] > 0
    assert doc["artifacts"][0]["format"] == "pte"


def test_int8_program_is_held_to_the_nmse_gate(tmp_path):
    """CRNet CR 1/64 with every layer in INT8 loses about 1.6 dB on these 64 samples: over
    the default 0.3 dB."""
    from csideploy.gates.numerics import NmseGateError

    with pytest.raises(NmseGateError) as caught:
        _export(tmp_path, "crnet", CRNET_64, int8_layers="all")
    message = str(caught.value)
    assert "encoder.int8.pte (float -> ExecuTorch int8)" in message
    assert "--max-nmse-drop 0.3" in message and "nothing was written" in message
    assert caught.value.numerics.delta_nmse_db > 0.5
    assert list(tmp_path.iterdir()) == []


def test_lora_integer_codeword_program(tmp_path):
    """A quantized LORA encoder ships its int8 codeword: XNNPACK runs the matrix, ExecuTorch's
    portable kernels the rounding; the levels match torch and the bundle verifies."""
    from csideploy.models import build

    torch.manual_seed(0)
    model = build("lora", 64, quantizer="lsq", bits=8, blocks=2, hidden=64)
    model.encoder.quantizer.set_parameters(0.02)
    checkpoint = save_checkpoint(tmp_path / "lora.pt", model)
    result = _export(tmp_path, "lora", checkpoint, eval_samples=32, latency_runs=0)
    fp32 = result.artifact("encoder.pte")
    assert [(t.name, t.dtype) for t in fp32.outputs] == [("output_0", "int8")]
    assert fp32.gates[0].name == "codeword level mismatch (fraction)"
    assert fp32.numerics.max_abs_error == 0.0
    assert "aten.round.default" in fp32.details["portable_ops"]
    report = verify_bundle(result.out_dir)
    assert report.ok, report.failures
