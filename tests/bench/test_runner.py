"""The standalone runner: one file, no torch, no csideploy, the documented JSON."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from csideploy import runner
from csideploy.bench.remote import RUNNER_PATH

ALLOWED_THIRD_PARTY = {"numpy", "onnxruntime", "ai_edge_litert", "tflite_runtime"}


def _imported_roots(source: str) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            argument = node.args[0]
            if isinstance(argument, ast.JoinedStr):  # f"{package}.interpreter"
                continue
            roots.add(argument.value.split(".")[0])
    return roots


def test_runner_imports_only_stdlib_numpy_and_runtimes() -> None:
    """numpy and one runtime; torch only inside the ExecuTorch adapter, because ExecuTorch's
    Python runtime takes and returns torch tensors."""
    tree = ast.parse(RUNNER_PATH.read_text())
    adapter = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EtModel")
    tree.body.remove(adapter)
    roots = _imported_roots(ast.unparse(tree))
    third_party = {r for r in roots if r not in sys.stdlib_module_names and r != "__future__"}
    assert third_party <= ALLOWED_THIRD_PARTY | {"executorch"}, third_party
    assert "torch" not in roots and "csideploy" not in roots
    assert _imported_roots(ast.unparse(adapter)) == {"executorch", "torch"}
    assert set(runner.LITERT_PACKAGES) <= ALLOWED_THIRD_PARTY


@pytest.fixture
def blocked_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with `torch` and `csideploy` packages that refuse to import.

    Child processes (the runner's per-file workers) inherit it, so the whole run is covered.
    """
    blocker = tmp_path / "blockers"
    for name in ("torch", "csideploy"):
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(
            f"raise ImportError('{name} must not be imported by the standalone runner')\n"
        )
    import os

    return {**os.environ, "PYTHONPATH": str(blocker)}


def _run_alone(args: list[str], env: dict[str, str], folder: Path) -> subprocess.CompletedProcess:
    """runner.py copied alone into `folder` and run from there."""
    alone = folder / "alone"
    alone.mkdir()
    shutil.copy(RUNNER_PATH, alone / "runner.py")
    return subprocess.run(
        [sys.executable, str(alone / "runner.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=alone,
        timeout=600,
        check=False,
    )


def test_runner_without_torch(
    artifact_dir: Path,
    golden: Path,
    blocked_env: dict[str, str],
    tmp_path: Path,
    perf_schema: dict,
) -> None:
    check = subprocess.run(
        [sys.executable, "-c", "import torch"], env=blocked_env, capture_output=True, text=True
    )
    assert "must not be imported" in check.stderr  # the blocker works
    done = _run_alone(
        [
            "--artifacts",
            str(artifact_dir),
            "--runs",
            "15",
            "--warmup",
            "2",
            "--inputs",
            str(golden),
            "--save-outputs",
            str(tmp_path / "outputs"),
        ],
        blocked_env,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    perf = json.loads(done.stdout)
    jsonschema.validate(perf, perf_schema)
    names = {r["artifact"]: r for r in perf["results"]}
    assert set(names) == {
        "encoder.onnx",
        "encoder.int8.onnx",
        "encoder.tflite",
        "encoder.int8.tflite",
    }  # decoder.onnx is BS-side: left out by default
    assert all(r["status"] == "ok" for r in perf["results"]), perf["results"]
    assert {names["encoder.onnx"]["runtime"], names["encoder.tflite"]["runtime"]} == {
        "onnxruntime",
        "litert",
    }
    int8_input = names["encoder.int8.tflite"]["input"][0]
    assert int8_input["dtype"] == "int8" and int8_input["scale"] > 0
    assert perf["emulated"] is False and perf["roofline"]["peak_macs_per_s"] > 1e8
    assert perf["machine"]["machine"] == __import__("platform").machine()
    for record in perf["results"]:
        assert len(record["timings_us"]) == 15
        assert record["latency_us"]["min"] <= record["latency_us"]["p50"]
        assert record["peak_rss_bytes"] >= record["rss_after_import_bytes"] > 0
    entries = {a["name"]: a for a in perf["artifacts"]}
    assert (entries["encoder.onnx"]["model"], entries["encoder.onnx"]["cr"]) == ("clnet", 64)
    assert entries["encoder.int8.onnx"]["precision"] == "int8"
    assert entries["encoder.onnx"]["params"] is None  # the manifest records no counts
    assert entries["encoder.onnx"]["gzip_bytes"] < entries["encoder.onnx"]["bytes"]
    saved = sorted(p.name for p in (tmp_path / "outputs").iterdir())
    assert "encoder.int8.tflite.raw.npy" in saved and "encoder.onnx.npy" in saved


def test_int8_io_outputs_are_dequantized(artifact_dir: Path, golden: Path, tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    done = subprocess.run(
        [
            sys.executable,
            str(RUNNER_PATH),
            "--artifacts",
            str(artifact_dir / "encoder.int8.tflite"),
            "--runs",
            "3",
            "--warmup",
            "0",
            "--no-roofline",
            "--inputs",
            str(golden),
            "--save-outputs",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    record = json.loads(done.stdout)["results"][0]
    spec = record["output"][0]
    raw = np.load(out / "encoder.int8.tflite.raw.npy")
    values = np.load(out / "encoder.int8.tflite.npy")
    assert raw.dtype == np.int8 and raw.shape == (len(np.load(golden)), 32)
    expected = (raw.astype(np.int32) - spec["zero_point"]) * np.float32(spec["scale"])
    np.testing.assert_array_equal(values, expected.astype(np.float32))
    # The same input through the interpreter directly, quantized by hand.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(artifact_dir / "encoder.int8.tflite"))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    x = np.load(golden)[:1] / np.float32(scale)
    q = np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5) + zero_point, -128, 127).astype(np.int8)
    interpreter.set_tensor(detail["index"], q)
    interpreter.invoke()
    direct = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_array_equal(direct[0], raw[0])


def test_batch_dynamic_onnx_and_fixed_tflite(artifact_dir: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(RUNNER_PATH),
            "--artifacts",
            str(artifact_dir / "encoder.onnx"),
            str(artifact_dir / "encoder.tflite"),
            "--batch",
            "4",
            "--runs",
            "3",
            "--warmup",
            "0",
            "--no-roofline",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    results = {r["artifact"]: r for r in json.loads(done.stdout)["results"]}
    assert results["encoder.onnx"]["status"] == "ok"
    assert results["encoder.onnx"]["input"][0]["shape"] == [4, 2, 32, 32]
    assert results["encoder.tflite"]["status"] == "skipped"
    assert "fixed batch of 1" in results["encoder.tflite"]["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--artifacts", "{empty}"], "no .onnx, .tflite or .pte encoder artifacts found"),
        (["--artifacts", "{empty}/missing.onnx"], "no such file or directory"),
        (["--artifacts", "{golden}"], "not an .onnx, .tflite or .pte file"),
        (["--artifacts", "{art}", "--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
        (["--artifacts", "{art}", "--threads", "0"], "must be >= 1"),
    ],
)
def test_runner_bad_input_exits_2(
    args: list[str], message: str, artifact_dir: Path, golden: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    filled = [a.format(empty=tmp_path / "empty", golden=golden, art=artifact_dir) for a in args]
    done = subprocess.run(
        [sys.executable, str(RUNNER_PATH), *filled], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert message in done.stderr


def test_discover_leaves_out_decoder(artifact_dir: Path) -> None:
    _, files = runner.discover([str(artifact_dir)])
    assert "decoder.onnx" not in {p.name for p in files}
    _, files = runner.discover([str(artifact_dir)], include_decoder=True)
    assert "decoder.onnx" in {p.name for p in files}


MANIFEST = {
    "model": {"name": "crnet", "cr": 16},
    "artifacts": [
        {"file": "encoder.int8.onnx", "precision": "int8"},
        {"file": "encoder.onnx", "precision": "fp32"},
    ],
}


@pytest.mark.parametrize(
    ("manifest", "name", "expected"),
    [
        (MANIFEST, "encoder.onnx", {"precision": "fp32", "model": "crnet", "cr": 16}),
        (MANIFEST, "encoder.int8.onnx", {"precision": "int8", "model": "crnet", "cr": 16}),
        (MANIFEST, "decoder.onnx", {"precision": None, "model": "crnet", "cr": 16}),
        # Keys of other layouts are not guessed at: only the schema's keys count.
        (
            {"model": "crnet", "cr": 4, "files": {"encoder.onnx": {"precision": "fp32"}}},
            "encoder.onnx",
            {"precision": None, "model": None, "cr": None},
        ),
        (
            {"model": {"name": "clnet", "cr": "1/16"}, "artifacts": {"file": "encoder.onnx"}},
            "encoder.onnx",
            {"precision": None, "model": "clnet", "cr": None},
        ),
        (
            {"model": {"name": 7, "cr": True}, "artifacts": [{"file": "encoder.onnx"}, 3]},
            "encoder.onnx",
            {"precision": None, "model": None, "cr": None},
        ),
        ([1, 2, 3], "encoder.onnx", {"precision": None, "model": None, "cr": None}),
    ],
)
def test_manifest_facts_read_the_schemas_keys(manifest: object, name: str, expected: dict) -> None:
    assert runner.manifest_facts(manifest, name) == expected


def test_emulation_marker_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CSIDEPLOY_EMULATED", raising=False)
    assert runner.detect_emulation() is None  # this interpreter is not under qemu
    monkeypatch.setenv("CSIDEPLOY_EMULATED", "1")
    assert runner.detect_emulation() == "declared"
    info = runner.machine_info("qemu-user")
    assert "emulated" in info["cpu_model"] and info["cores"] >= 1
