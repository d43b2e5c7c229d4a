"""Latency and size of every zoo encoder, fp32 and static INT8, on this machine.

    python benchmarks/zoo_latency.py [--models clnet,crnet] [--crs 4,64] [--runs 200]
                                     [--tflite] [--doc docs/benchmarks.md]

Each (model, CR) is exported by the project's recipe (`csideploy.pipeline.run_export`: ONNX fp32
and static QDQ INT8, calibrated on the built-in synthetic CSI; with `--tflite` also the TFLite
files when that format is registered) from freshly initialised weights, which is enough for
latency: it does not depend on weight values. Every encoder file is then timed by
`csideploy bench`'s runner (batch 1, one thread) and the table, with the machine named, is
written between the markers of the zoo section of `docs/benchmarks.md`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BEGIN = "<!-- zoo-latency:begin -->"
END = "<!-- zoo-latency:end -->"
REPO = Path(__file__).resolve().parents[1]


def export_one(model: str, cr: int, out: Path, tflite: bool, how: str) -> tuple[Path, str]:
    """The artifact directory of (model, CR) and which export made it.

    `how`: ``recipe`` (the project's export recipe), ``plain`` (torch.onnx + onnxruntime
    static QDQ) or ``auto`` (the recipe, and plain where the recipe is missing or fails).
    """
    if how == "plain":
        return _fallback_export(model, cr, out), "plain"
    try:
        return _recipe_export(model, cr, out, tflite), "recipe"
    except Exception as error:
        if how == "recipe":
            raise
        reason = (str(error).splitlines() or [type(error).__name__])[0][:100]
        return _fallback_export(model, cr, out), f"plain (recipe failed: {reason})"


def _recipe_export(model: str, cr: int, out: Path, tflite: bool) -> Path:
    import torch

    from csideploy.models import build
    from csideploy.pipeline.config import ExportConfig
    from csideploy.pipeline.format_steps import FORMAT_STEPS
    from csideploy.pipeline.run import run_export

    checkpoint = out.parent / f"{model}-cr{cr}.init.pt"
    torch.manual_seed(0)
    torch.save(build(model, cr).state_dict(), checkpoint)
    formats = ("onnx", "tflite") if tflite and "tflite" in FORMAT_STEPS else ("onnx",)
    run_export(
        ExportConfig(
            model=model,
            cr=cr,
            checkpoint=str(checkpoint),
            int8="static",
            calib_samples=64,
            eval_samples=64,
            max_nmse_drop=math.inf,  # untrained weights: only latency and size are of interest
            out=str(out),
            force=True,
            formats=formats,
            latency_runs=0,
        )
    )
    return out


def _fallback_export(model: str, cr: int, out: Path) -> Path:
    """torch.onnx (dynamo) fp32 and onnxruntime static QDQ INT8 on synthetic calibration CSI."""
    import numpy as np
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from csideploy.models import build

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.manual_seed(0)
    encoder = build(model, cr).encoder
    fp32 = out / "encoder.onnx"
    torch.onnx.export(
        encoder, (torch.rand(1, 2, 32, 32),), str(fp32), dynamo=True, external_data=False
    )
    calibration = np.random.default_rng(0).random((64, 2, 32, 32), dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            import onnxruntime

            name = onnxruntime.InferenceSession(str(fp32)).get_inputs()[0].name
            self._items = iter([{name: calibration[i : i + 1]} for i in range(64)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self._items, None)

    quantize_static(
        str(fp32), str(out / "encoder.int8.onnx"), Reader(), quant_format=QuantFormat.QDQ
    )
    return out


def bench_one(folder: Path, runs: int, warmup: int) -> dict[str, Any]:
    from csideploy.bench import BenchConfig, run_bench

    return run_bench(folder, BenchConfig(runs=runs, warmup=warmup, threads=(1,))).perf


def table(rows: list[dict[str, Any]], perf: dict[str, Any] | None, elapsed: float) -> str:
    from csideploy.report.render import machine_line, roofline_line
    from csideploy.report.tables import format_bytes, format_us

    lines = []
    if perf:
        settings = perf["settings"]
        lines += [
            f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} on {machine_line(perf)}; "
            f"batch 1, one thread, {settings['warmup']} warm-up and {settings['runs']} timed "
            f"runs per file (load average {os.getloadavg()[0]:.1f} at the end; "
            f"{elapsed / 60:.0f} min in all).",
            "",
        ]
        roof = roofline_line(perf)
        if roof:
            lines += [roof, ""]
    header = (
        "| model | CR | enc. params | enc. MACs | file | runtime | size | gzip | p50 | p90 "
        "| p99 | floor | p50 / floor |"
    )
    lines += [header, "|" + "---|" * 13]
    for row in rows:
        if row.get("error"):
            lines.append(
                f"| {row['model']} | 1/{row['cr']} | | | export failed: {row['error']} "
                "| | | | | | | | |"
            )
            continue
        floor = row.get("floor") or {}
        ratio = row.get("p50_over_floor")
        lines.append(
            f"| {row['model']} | 1/{row['cr']} | {_count(row['params'])} | "
            f"{_count(row['macs'])} | {row['file']} | {row['runtime']} | "
            f"{format_bytes(row['bytes'])} | {format_bytes(row['gzip_bytes'])} | "
            f"{format_us(row['p50'])} | {format_us(row['p90'])} | {format_us(row['p99'])} | "
            f"{format_us(floor.get('floor_us'))} | {f'{ratio:.1f}x' if ratio else '-'} |"
        )
    return "\n".join(lines) + "\n"


def _count(value: int | None) -> str:
    return f"{value:,}" if value else "-"


def write_doc(doc: Path, body: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    block = f"{BEGIN}\n{body.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        start, end = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + block + text[end:]
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    doc.write_text(text, encoding="utf-8")


def main() -> int:
    sys.path.insert(0, str(REPO))
    from csideploy.models import get_entry, list_models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma list (default: the whole zoo)")
    parser.add_argument(
        "--crs",
        help="comma list of CRs (default: every CR of each model; a model with none of them "
        "runs at its highest CR)",
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--tflite", action="store_true", help="also export and time TFLite")
    parser.add_argument("--work", type=Path, help="where the artifacts go (default: a temp dir)")
    parser.add_argument(
        "--export",
        choices=("auto", "recipe", "plain"),
        default="auto",
        help="the project's export recipe, plain torch.onnx + QDQ, or the recipe with fallback",
    )
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    models = args.models.split(",") if args.models else list_models()
    wanted = {int(c) for c in args.crs.split(",")} if args.crs else None
    work = args.work or Path(tempfile.mkdtemp(prefix="zoo-latency-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[dict[str, Any]] = []
    exports: dict[str, int] = {}
    last_perf = None
    for model in models:
        crs = get_entry(model).crs
        # A model with none of the asked CRs still gets a row: its highest compression.
        chosen = [cr for cr in crs if not wanted or cr in wanted] or [max(crs)]
        for cr in chosen:
            print(f"{model} CR 1/{cr}: export", file=sys.stderr, flush=True)
            try:
                folder, how = export_one(
                    model, cr, work / f"{model}-cr{cr}", args.tflite, args.export
                )
                exports[how] = exports.get(how, 0) + 1
            except Exception as error:  # one model failing must not hide the others
                reason = str(error).splitlines()[0][:120]
                rows.append({"model": model, "cr": cr, "error": reason})
                print(f"  export failed: {reason}", file=sys.stderr, flush=True)
                continue
            perf = bench_one(folder, args.runs, args.warmup)
            last_perf = perf
            artifacts = {a["name"]: a for a in perf["artifacts"]}
            for record in perf["results"]:
                if record["status"] != "ok":
                    continue
                entry = artifacts[record["artifact"]]
                latency = record["latency_us"]
                rows.append(
                    {
                        "model": model,
                        "cr": cr,
                        "params": entry.get("params"),
                        "macs": entry.get("macs"),
                        "file": record["artifact"],
                        "runtime": record["runtime"],
                        "bytes": entry["bytes"],
                        "gzip_bytes": entry["gzip_bytes"],
                        "p50": latency["p50"],
                        "p90": latency["p90"],
                        "p99": latency["p99"],
                        "floor": record.get("floor"),
                        "p50_over_floor": record.get("p50_over_floor"),
                    }
                )
                print(
                    f"  {record['artifact']:<22} p50 {latency['p50']:9.1f} us",
                    file=sys.stderr,
                    flush=True,
                )
    body = table(rows, last_perf, time.time() - started)
    body += "\nExports: " + "; ".join(f"{how}: {n}" for how, n in exports.items()) + ".\n"
    write_doc(args.doc, body)
    print(body)
    print(f"wrote {args.doc} ({platform.machine()}, artifacts in {work})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
