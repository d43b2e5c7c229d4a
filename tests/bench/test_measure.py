"""`csideploy bench` and `run_bench` on real artifact directories, bundles and single files."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import jsonschema
import pytest
import torch
from click.testing import CliRunner

from csideploy.bench import BenchConfig, run_bench
from csideploy.bench.roofline import count_onnx_macs
from csideploy.cli import main
from csideploy.errors import CsiDeployError
from csideploy.models import build
from csideploy.models.stats import count_macs
from csideploy.report.render import BLOCK_BEGIN, BLOCK_END

QUICK = ["--runs", "12", "--warmup", "2"]


def _bench(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["bench", *args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_bench_cli_json_writes_perf_and_report(workdir: Path, perf_schema: dict) -> None:
    export_text = "# Export report\n\nWritten by the export recipe.\n"
    (workdir / "report.md").write_text(export_text)
    code, out, err = _bench(str(workdir), *QUICK, "--threads", "1,2", "--json")
    assert code == 0, err
    perf = json.loads(out)
    jsonschema.validate(perf, perf_schema)
    assert json.loads((workdir / "perf.json").read_text()) == perf
    assert {(r["artifact"], r["threads"]) for r in perf["results"]} == {
        (name, t)
        for name in ("encoder.onnx", "encoder.int8.onnx", "encoder.tflite", "encoder.int8.tflite")
        for t in (1, 2)
    }
    assert perf["target"]["kind"] == "local"
    for record in perf["results"]:
        assert record["status"] == "ok", record
        assert record["floor"]["floor_us"] > 0
        assert record["p50_over_floor"] == pytest.approx(
            record["latency_us"]["p50"] / record["floor"]["floor_us"], rel=0.01
        )
        assert record["p50_over_floor"] >= 1.0  # a floor is a lower bound
    report = (workdir / "report.md").read_text()
    assert report.startswith(export_text)
    assert report.count(BLOCK_BEGIN) == 1 and report.count(BLOCK_END) == 1
    assert "## Latency" in report and "| encoder.int8.tflite | litert | 1 |" in report
    assert "lower bound" in report and "not a prediction" in report

    code, out, err = _bench(str(workdir), *QUICK)  # again: the block is replaced, not added
    assert code == 0, err
    assert "encoder.onnx" in out and "wrote" in out
    report = (workdir / "report.md").read_text()
    assert report.startswith(export_text) and report.count(BLOCK_BEGIN) == 1


def test_macs_from_the_onnx_graph_params_from_the_manifests_model(workdir: Path) -> None:
    encoder = build("clnet", 64).encoder
    expected = count_macs(encoder, torch.zeros(1, 2, 32, 32))
    assert count_onnx_macs(workdir / "encoder.onnx") == expected
    assert count_onnx_macs(workdir / "encoder.int8.onnx") == expected  # QDQ counts the same

    config = BenchConfig(runs=5, warmup=0, roofline=False)
    with_manifest = run_bench(workdir, config, write=False).perf
    entries = {a["name"]: a for a in with_manifest["artifacts"]}
    assert entries["encoder.onnx"]["params"] == 66_036  # the manifest's model.name / model.cr
    assert entries["encoder.onnx"]["params_source"] == "zoo model clnet CR 1/64"
    assert entries["encoder.int8.onnx"]["precision"] == "int8"  # its artifacts[].precision

    (workdir / "manifest.json").unlink()
    without = run_bench(workdir, config, write=False).perf
    entries = {a["name"]: a for a in without["artifacts"]}
    assert entries["encoder.onnx"]["macs"] == expected
    assert entries["encoder.onnx"]["macs_source"] == "onnx graph"
    assert entries["encoder.int8.tflite"]["macs"] == expected
    assert entries["encoder.int8.tflite"]["macs_source"] == "onnx graph of encoder.onnx"
    assert entries["encoder.onnx"]["params"] is None  # no manifest, no parameter count


def test_torch_runtime_with_and_without_manifest(workdir: Path, tmp_path: Path) -> None:
    config = BenchConfig(runtimes=("torch",), runs=10, warmup=1, roofline=False)
    perf = run_bench(workdir, config, write=False).perf
    (record,) = perf["results"]  # only torch was asked for
    assert record["status"] == "ok", record
    assert record["artifact"] == "torch:clnet-cr64" and record["runtime"] == "torch"
    assert record["output"][0]["shape"] == [1, 32]
    entry = next(a for a in perf["artifacts"] if a["name"] == "torch:clnet-cr64")
    assert entry["params"] == 66_036 and entry["macs"] > 0

    (workdir / "manifest.json").write_text(json.dumps({"note": "no model named here"}))
    perf = run_bench(workdir, config, write=False).perf
    (record,) = perf["results"]
    assert record["status"] == "skipped"
    assert "names no model and CR" in record["reason"]

    (workdir / "manifest.json").unlink()
    code, out, err = _bench(str(workdir), *QUICK, "--runtime", "onnxruntime,torch")
    assert code == 0, err
    assert "skipped: no manifest.json beside the artifacts" in out


def test_single_file_and_bundle(workdir: Path, tmp_path: Path) -> None:
    code, _, err = _bench(str(workdir / "encoder.tflite"), *QUICK, "--out", str(tmp_path / "a"))
    assert code == 0, err
    perf = json.loads((tmp_path / "a" / "perf.json").read_text())
    assert [r["artifact"] for r in perf["results"]] == ["encoder.tflite"]
    # A loose file still gets its manifest's figures from the folder it sits in.
    assert perf["artifacts"][0]["params"] == 66_036

    bundle = tmp_path / "clnet-cr64.tar.gz"
    with tarfile.open(bundle, "w:gz") as archive:
        archive.add(workdir, arcname="clnet-cr64")
    code, _, err = _bench(str(bundle), *QUICK, "--runtime", "onnxruntime")
    assert code == 0, err
    perf = json.loads((tmp_path / "clnet-cr64-bench" / "perf.json").read_text())
    status = {r["artifact"]: r["status"] for r in perf["results"]}
    assert status == {
        "encoder.onnx": "ok",
        "encoder.int8.onnx": "ok",
        "encoder.tflite": "skipped",  # no selected runtime runs .tflite files
        "encoder.int8.tflite": "skipped",
    }


def test_decoder_only_when_asked(workdir: Path) -> None:
    config = BenchConfig(runs=5, warmup=0, roofline=False, include_decoder=True)
    perf = run_bench(workdir, config, write=False).perf
    decoder = next(r for r in perf["results"] if r["artifact"] == "decoder.onnx")
    assert decoder["status"] == "ok"
    assert next(a for a in perf["artifacts"] if a["name"] == "decoder.onnx")["role"] == "decoder"
    code, _, err = _bench(str(workdir / "decoder.onnx"), *QUICK)
    assert code == 2 and "--include-decoder" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{empty}"], "no .onnx, .tflite or .pte encoder artifacts found in"),
        (["{empty}/nothing-here"], "no such file or directory"),
        (["{art}/manifest.json"], "not an .onnx, .tflite or .pte file"),
        (["{art}", "--threads", "one"], "--threads must be a comma list"),
        (["{art}", "--runtime", "tensorrt"], "unknown runtime 'tensorrt'"),
        (["{art}", "--runs", "0"], "runs must be >= 1"),
        (["{art}", "--target", "ftp://host"], "is not local, ssh://"),
        (["{art}", "--target", "ssh://user@host:99999"], "port 99999 is out of range"),
        (["{art}", "--inputs", "{empty}/x.npy"], "no such file"),
        (["{bad_bundle}"], "not a readable bundle archive"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    args: list[str], message: str, artifact_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tar archive")
    filled = [
        a.format(empty=tmp_path / "empty", art=artifact_dir, bad_bundle=tmp_path / "bad.tar.gz")
        for a in args
    ]
    code, out, err = _bench(*filled)
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert message in err
    assert not (artifact_dir / "perf.json").exists()


def test_config_validation() -> None:
    with pytest.raises(CsiDeployError, match="threads must be >= 1"):
        BenchConfig(threads=(0,))
    with pytest.raises(CsiDeployError, match="warmup must be >= 0"):
        BenchConfig(warmup=-1)
    assert BenchConfig(runtimes=("torch",)).file_runtimes == ("none",)
