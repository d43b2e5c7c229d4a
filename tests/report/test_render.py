"""report.md / report.html from a real perf.json and numerics.json in the export's layout."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import matplotlib.image
import pytest
from click.testing import CliRunner

from csideploy.bench import BenchConfig, run_bench
from csideploy.cli import main
from csideploy.report.load import load_run
from csideploy.report.render import BLOCK_BEGIN, BLOCK_END, render_report, replace_block

EXPORT_REPORT = "# clnet CR 1/64 export\n\nNumerics gate passed.\n"


def _record(file: str, precision: str, nmse: float, error: float, **extra: object) -> dict:
    """One artifact record as `csideploy export` writes it into numerics.json."""
    int8 = precision == "int8"
    return {
        "file": file,
        "format": file.rsplit(".", 1)[1],
        "role": "encoder",
        "precision": precision,
        "compared_output": "codeword",
        "max_abs_error": error,
        "nmse_db": nmse,
        "float_nmse_db": -29.1,
        "delta_nmse_db": nmse + 29.1,
        "samples": 200,
        "level_mismatch": None,
        "gates": [
            {"name": "NMSE drop (dB)", "measured": nmse + 29.1, "limit": 0.5, "passed": True}
            if int8
            else {
                "name": "max-abs codeword error",
                "measured": error,
                "limit": 1e-4,
                "passed": True,
            }
        ],
        "float_ops": ["Mul"] if int8 else [],
        "layers": [
            {
                "tensor": "t1",
                "node": "encoder.fc/Gemm",
                "op_type": "Gemm",
                "sqnr_db": 8.5,
                "local_sqnr_db": 9.0,
            },
            {
                "tensor": "t0",
                "node": "encoder.conv/Conv",
                "op_type": "Conv",
                "sqnr_db": 31.0,
                "local_sqnr_db": None,
            },
        ]
        if file == "encoder.int8.onnx"
        else [],
        **extra,
    }


NUMERICS = {
    "model": "clnet",
    "cr": 64,
    "float_nmse_db": -29.1,
    "sizes": {"params_encoder": 66036, "params_decoder": 70000, "macs_encoder": 1000000,
              "macs_decoder": 2000000},
    "artifacts": [
        _record("encoder.onnx", "fp32", -29.1, 2.1e-7),
        _record("encoder.int8.onnx", "int8", -27.5, 3.2e-3),
        _record("encoder.tflite", "fp32", -29.1, 1.9e-7),
        _record("encoder.int8.tflite", "int8", -26.8, 4.0e-3),
    ],
}  # fmt: skip


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
    # The Pareto plot, SQNR of the one file with layers, four latency histograms; inline
    # only, since a PNG beside the manifest would be a file it does not list.
    assert len(pngs) == 6 and files.plots == ()
    assert not (benched_copy / "plots").exists()
    for png in pngs:
        height, width, _ = matplotlib.image.imread(io.BytesIO(png), format="png").shape
        assert width >= 600 and height >= 240
    for heading in ("<h2>What to ship</h2>", "<h2>Files</h2>", "<h3>Gates</h3>", "<h2>Plots</h2>"):
        assert heading in html
    # The smallest passing file unless timed > 2x the fastest: an INT8 file, or a float
    # one when this shared machine timed INT8 slow.
    (ship,) = files.ship
    assert ship in ("encoder.int8.tflite", "encoder.int8.onnx", "encoder.tflite", "encoder.onnx")
    assert f'data-ship="{ship}"' in html
    assert "-27.50 dB" in html and "+1.600 dB" in html  # NMSE and ΔNMSE, rounded, with units
    assert "lower bound on latency, not a prediction" in html

    md = files.markdown.read_text()
    assert md.startswith(EXPORT_REPORT)  # the export's text is kept
    assert md.count(BLOCK_BEGIN) == 1 and md.count(BLOCK_END) == 1
    assert "| artifact | runtime | threads | p50 |" in md
    assert "| file | side | precision | size | params | MACs | latency p50 |" in md
    assert "| encoder.int8.onnx | UE | int8 |" in md
    assert "| 66,036 | " in md  # encoder params: bench counts those of the manifest's model
    assert "| -27.50 dB | +1.600 dB | 0.0032 (codeword) | passed |" in md
    assert f"## What to ship\n\n**{ship}**. {ship} passed its 1 gate(s)" in md
    assert "](plots/" not in md
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
    assert len(written["plots"]) == 11  # one Pareto, two SQNR, eight histograms
    assert len(written["ship"]) == 2 and all(s.startswith("encoder.") for s in written["ship"])
    html = Path(written["html"]).read_text()
    assert len(_embedded_pngs(html)) == 11
    md_links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert "plots/pareto.png" in md_links and len(md_links) == 11
    assert all((tmp_path / "combined" / link).is_file() for link in md_links)
    assert (
        not (benched / "report.html").exists()
        or "crnet" not in (benched / "report.html").read_text()
    )


def test_rows_read_numerics_by_key(benched_copy: Path) -> None:
    numerics = json.loads((benched_copy / "numerics.json").read_text())
    numerics["artifacts"][1]["gates"].append(
        {"name": "codeword fidelity", "measured": 0.97, "limit": 0.95, "passed": True}
    )
    numerics["artifacts"][1]["kept_float_layers"] = "encoder.fc"
    (benched_copy / "numerics.json").write_text(json.dumps(numerics))
    run = load_run(benched_copy)
    rows = {row.name: row for row in run.files}
    int8 = rows["encoder.int8.onnx"]
    assert (int8.nmse_db, int8.max_abs_error, int8.float_ops) == (-27.5, 3.2e-3, ("Mul",))
    assert [g.name for g in int8.gates] == ["NMSE drop (dB)", "codeword fidelity"]
    assert int8.extra == {"kept_float_layers": "encoder.fc"}
    assert int8.latency is not None and int8.latency.source == "bench"
    # numerics.json's sizes.params_decoder: the manifest records no counts
    assert (rows["decoder.onnx"].params, rows["decoder.onnx"].nmse_db) == (70000, None)
    html = render_report([benched_copy]).html.read_text()
    assert "codeword fidelity" in html and "kept_float_layers" in html


def test_failed_gate_is_not_shipped(benched_copy: Path) -> None:
    numerics = json.loads((benched_copy / "numerics.json").read_text())
    for record in numerics["artifacts"]:
        if record["precision"] == "int8":
            record["gates"][0]["passed"] = False
    (benched_copy / "numerics.json").write_text(json.dumps(numerics))
    files = render_report([benched_copy])
    assert files.ship[0] in ("encoder.onnx", "encoder.tflite")
    assert "Failed a gate, not to be shipped: encoder.int8.onnx, encoder.int8.tflite." in (
        files.html.read_text()
    )


@pytest.mark.parametrize(
    "numerics",
    [
        {"artifacts": [{"file": "encoder.onnx", "nmse_db": "-20", "gates": "passed"}]},
        {"artifacts": [{"file": "encoder.onnx", "gates": [{"limit": "inf"}], "layers": [7]}]},
        {"artifacts": "none", "sizes": [1]},
        [1, 2, 3],
        "text",
        None,
        {"artifacts": [{"file": "encoder.onnx", "nmse_db": float("nan")}]},
    ],
)
def test_odd_numerics_never_crash(numerics: object, benched_copy: Path) -> None:
    (benched_copy / "numerics.json").write_text(json.dumps(numerics))
    files = render_report([benched_copy])
    row = next(r for r in load_run(benched_copy).files if r.name == "encoder.onnx")
    assert row.nmse_db is None
    assert "## Files" in files.markdown.read_text()


def test_unreadable_files_become_notes(benched_copy: Path) -> None:
    (benched_copy / "numerics.json").write_text("{not json")
    files = render_report([benched_copy])
    assert any("numerics.json is unreadable" in p for p in files.problems)
    assert " dB |" not in files.markdown.read_text()  # no NMSE figure without numerics


def test_report_without_perf_has_sizes(artifact_dir: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(artifact_dir, tmp_path / "fresh"))
    files = render_report([folder])
    md = files.markdown.read_text()
    assert "No latency measured yet" in md
    assert "| encoder.int8.tflite | UE | int8 |" in md  # the manifest's artifacts[].precision
    assert "66,036" not in md  # the manifest records no counts; numerics.json or perf.json do
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
