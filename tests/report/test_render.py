"""report.md / report.html from real perf.json, numerics.json of various layouts, and plots."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import matplotlib.image
import pytest
from click.testing import CliRunner

from csideploy.bench import BenchConfig, run_bench
from csideploy.cli import main
from csideploy.report.render import (
    BLOCK_BEGIN,
    BLOCK_END,
    load_run,
    nmse_for,
    numerics_records,
    render_report,
    replace_block,
)

EXPORT_REPORT = "# clnet CR 1/64 export\n\nNumerics gate passed.\n"
NUMERICS = {
    "model": "clnet",
    "checks": [
        {"artifact": "encoder.onnx", "max_abs": 2.1e-7, "nmse_db": -29.1, "float_nmse_db": -29.1},
        {"artifact": "encoder.int8.onnx", "max_abs": 3.2e-3, "nmse_db": -27.5, "passed": True},
        {"artifact": "encoder.tflite", "max_abs": 1.9e-7, "nmse_db": -29.1},
        {"artifact": "encoder.int8.tflite", "max_abs": 4.0e-3, "nmse_db": -26.8},
    ],
}


@pytest.fixture(scope="session")
def benched(artifact_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the artifacts with a real perf.json, numerics.json and an export report."""
    folder = tmp_path_factory.mktemp("benched") / "clnet-cr64"
    shutil.copytree(artifact_dir, folder, ignore=shutil.ignore_patterns(".complete"))
    (folder / "report.md").write_text(EXPORT_REPORT)
    (folder / "numerics.json").write_text(json.dumps(NUMERICS))
    run_bench(folder, BenchConfig(runs=40, warmup=3, threads=(1, 2)))
    return folder


@pytest.fixture
def benched_copy(benched: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(benched, tmp_path / benched.name))


def _embedded_pngs(html: str) -> list[bytes]:
    return [
        base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    ]


def test_report_single_directory(benched_copy: Path) -> None:
    files = render_report([benched_copy])
    assert files.html == benched_copy / "report.html"
    html = files.html.read_text()
    pngs = _embedded_pngs(html)
    assert len(pngs) == len(files.plots) == 5  # four histograms and the Pareto plot
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in pngs)
    for plot in files.plots:
        height, width, _ = matplotlib.image.imread(plot).shape
        assert width >= 600 and height >= 350
    for heading in ("<h2>Latency</h2>", "<h2>Size</h2>", "<h2>Numerics</h2>", "<h2>Plots</h2>"):
        assert heading in html
    assert "lower bound on latency, not a prediction" in html

    md = files.markdown.read_text()
    assert md.startswith(EXPORT_REPORT)  # the export's text is kept
    assert md.count(BLOCK_BEGIN) == 1 and md.count(BLOCK_END) == 1
    assert "| artifact | runtime | threads | p50 |" in md
    assert "| artifact | role | precision | bytes | gzip | params | MACs |" in md
    assert "| encoder.onnx | encoder | fp32 |" in md
    assert "| artifact | max_abs | nmse_db |" in md
    assert "| encoder.int8.onnx | 0.0032 | -27.5 |  | passed |" in md
    assert "![Pareto: NMSE vs latency vs size](plots/pareto.png)" in md
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (benched_copy / link).is_file()
    # Rendering again replaces the block instead of adding one.
    render_report([benched_copy])
    assert files.markdown.read_text().count(BLOCK_BEGIN) == 1


def test_report_several_directories(benched: Path, tmp_path: Path) -> None:
    other = Path(shutil.copytree(benched, tmp_path / "crnet-cr4"))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["model"] = {"name": "crnet", "cr": 4}
    (other / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(
        main, ["report", str(benched), str(other), "--out", str(tmp_path / "combined"), "--json"]
    )
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)
    md = Path(written["markdown"]).read_text()
    assert "clnet-cr64/encoder.onnx" in md and "crnet-cr4/encoder.onnx" in md
    assert len(written["plots"]) == 9
    html = Path(written["html"]).read_text()
    assert len(_embedded_pngs(html)) == 9
    assert (
        not (benched / "report.html").exists()
        or "crnet" not in (benched / "report.html").read_text()
    )


def test_pareto_uses_numerics(benched_copy: Path) -> None:
    run = load_run(benched_copy)
    assert nmse_for(run.numerics, "encoder.int8.onnx") == -27.5
    assert nmse_for(run.numerics, "encoder.onnx") == -29.1  # not the float reference key
    assert nmse_for(run.numerics, "decoder.onnx") is None
    from csideploy.report.render import pareto_points

    points = {p["artifact"]: p for p in pareto_points([run])}
    assert points["encoder.int8.tflite"]["nmse_db"] == -26.8
    assert points["encoder.int8.tflite"]["bytes"] < points["encoder.tflite"]["bytes"]


@pytest.mark.parametrize(
    "numerics",
    [
        {"encoder.onnx": {"nmse_db": -20.0, "max_abs": 1e-6}},
        [{"file": "encoder.onnx", "e2e": {"nmse_db": -20.0}}],
        {"steps": {"onnx": {"path": "artifacts/encoder.onnx", "nmse": -20.0}}},
        {"encoder.onnx": "passed"},
        [1, 2, 3],
        "text",
        None,
        {"checks": [{"artifact": "encoder.onnx", "nmse_db": float("nan")}]},
    ],
)
def test_numerics_layouts_never_crash(numerics: object, benched_copy: Path) -> None:
    records = numerics_records(numerics)
    assert all(isinstance(label, str) for label, _ in records)
    value = nmse_for(numerics, "encoder.onnx")
    assert value in (None, -20.0)
    (benched_copy / "numerics.json").write_text(json.dumps(numerics))
    files = render_report([benched_copy])
    assert "## Size" in files.markdown.read_text()


def test_unreadable_files_become_notes(benched_copy: Path) -> None:
    (benched_copy / "numerics.json").write_text("{not json")
    files = render_report([benched_copy])
    assert any("numerics.json is unreadable" in p for p in files.problems)
    assert "## Numerics" not in files.markdown.read_text()


def test_report_without_perf_has_sizes(artifact_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(artifact_dir, tmp_path / "fresh"))
    files = render_report([folder])
    md = files.markdown.read_text()
    assert "No latency measured yet" in md
    assert "| encoder.int8.tflite | encoder | int8 |" in md
    assert "66,036" in md  # encoder params from the manifest
    assert files.plots == ()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{a}", "{a}"], "several directories need --out DIR"),
        (["{missing}"], "not a directory"),
        (["{empty}"], "nothing to report"),
    ],
)
def test_report_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "empty").mkdir()
    filled = [
        x.format(a=tmp_path / "a", missing=tmp_path / "missing", empty=tmp_path / "empty")
        for x in args
    ]
    result = CliRunner().invoke(main, ["report", *filled])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr


def test_replace_block() -> None:
    assert replace_block("", "body") == f"{BLOCK_BEGIN}\nbody\n{BLOCK_END}\n"
    text = replace_block("# Title\nkept", "one")
    assert text.startswith("# Title\nkept\n\n" + BLOCK_BEGIN)
    again = replace_block(text + "\ntail\n", "two")
    assert "one" not in again and "two" in again and again.endswith("tail\n")
    assert again.count(BLOCK_BEGIN) == 1
