"""report.html in a real browser: headless Chromium at phone width, over the DevTools pipe.

A real export (ONNX, static INT8, small sample counts) and a real `csideploy bench` give the
page its numerics.json, perf.export.json and perf.json; the test checks what Chromium
rendered: the text, that every image decoded, no console error, no horizontal page scroll
beyond the tables' own, and that each figure cell holds the value of those documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from _chromium import render

import csideploy
from csideploy.bench import BenchConfig, run_bench
from csideploy.defaults import MIN_CALIB_SAMPLES, MIN_EVAL_SAMPLES
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.results import ExportResult
from csideploy.pipeline.run import run_export
from csideploy.report import render_report

pytestmark = pytest.mark.slow  # one real export (ONNX, INT8) shared by both tests


@pytest.fixture(scope="module")
def export_result(tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The default CLNet exported to ONNX fp32 + static INT8 (the accuracy plan, which puts
    layers in int8 on this model), with small sample counts."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("browser") / "clnet-cr4"
    return run_export(
        ExportConfig(
            model="clnet",
            int8="static",
            int8_layers="accuracy",  # no timing: the same int8 layers every run
            formats=("onnx",),
            calib_samples=MIN_CALIB_SAMPLES,
            eval_samples=MIN_EVAL_SAMPLES,
            latency_runs=10,
            out=str(out),
        )
    )


@pytest.fixture(scope="module")
def exported(export_result: ExportResult) -> Path:
    return export_result.out_dir


def _schema(command: str) -> dict:
    """The JSON Schema of one command's --json output."""
    path = Path(csideploy.__file__).parent / "bundle" / "cli-output.schema.json"
    return {**json.loads(path.read_text()), "$ref": f"#/$defs/{command}"}


def _cells(page, table: str) -> dict[tuple[str, str], object]:
    return {(c["file"], c["key"]): c["value"] for c in page.cells if c["table"] == table}


def test_export_report_in_chromium(exported: Path) -> None:
    page = render((exported / "report.html").as_uri())
    assert page.errors == []
    assert page.images and all(i["complete"] and i["width"] >= 600 for i in page.images)
    assert page.width <= 390  # wide tables scroll inside their box, the page does not
    assert "What to ship" in page.text and "Ops left in float" in page.text
    assert page.ship in (["encoder.int8.onnx"], ["encoder.onnx"])
    assert "the export's quick check" in page.text
    numerics = json.loads((exported / "numerics.json").read_text())
    quick = json.loads((exported / "perf.export.json").read_text())
    cells = _cells(page, "files")
    for record in numerics["artifacts"]:
        name = record["file"]
        for key in ("nmse_db", "delta_nmse_db", "max_abs_error"):
            assert cells[(name, key)] == pytest.approx(record[key], rel=1e-12)
        assert cells[(name, "passed")] is all(g["passed"] for g in record["gates"])
    for entry in quick["results"]:
        assert cells[(entry["file"], "p50_us")] == entry["p50_us"]
    role = {"encoder": "encoder", "decoder": "decoder"}
    for record in numerics["artifacts"]:
        key = f"params_{role[record['role']]}"
        assert cells[(record["file"], "params")] == numerics["sizes"][key]
    gates = [c for c in page.cells if c["table"] == "gates" and c["key"] == "limit"]
    assert {c["value"] for c in gates} >= {numerics["limits"]["max_nmse_drop_db"]}


def test_bench_report_in_chromium(exported: Path, tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(exported, tmp_path / exported.name))
    perf = run_bench(folder, BenchConfig(runs=30, warmup=3, roofline=False)).perf
    jsonschema.validate(perf, _schema("bench"))  # what `csideploy bench --json` prints
    files = render_report([folder])
    page = render(files.html.as_uri())
    assert page.errors == []
    perf = json.loads((folder / "perf.json").read_text())
    cells = _cells(page, "files")
    for record in perf["results"]:
        if record["status"] == "ok":
            assert cells[(record["artifact"], "p50_us")] == record["latency_us"]["p50"]
    alts = [i["alt"] for i in page.images]
    assert any(a.startswith("latency distribution of") for a in alts)
    assert any(a.startswith("per-tensor SQNR of") for a in alts)
    assert any(a.startswith("NMSE vs latency") for a in alts)
    assert all(i["complete"] and i["width"] > 0 for i in page.images)


def test_export_json_matches_its_schema(export_result: ExportResult) -> None:
    document = json.loads(json.dumps(export_result.to_dict()))  # what --json prints
    jsonschema.validate(document, _schema("export"))
    assert {a["file"] for a in document["artifacts"]} == {
        "encoder.onnx", "encoder.int8.onnx", "decoder.onnx"
    }  # fmt: skip
