"""Timing the float torch encoder for `csideploy bench --runtime torch`.

The only part of bench that needs torch: the zoo encoder named by the manifest (`model.name`,
`model.cr`), built with its initial weights (latency does not depend on weight values), timed in
a fresh interpreter with the runner's thread variables and timing loop, so its figures compare
with the files'.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csideploy import runner


@dataclass(frozen=True)
class TorchSettings:
    """The bench settings a torch timing uses."""

    threads: tuple[int, ...]
    batch: int
    warmup: int
    runs: int
    timeout_s: float


def add_torch(
    perf: dict[str, Any], settings: TorchSettings, manifest_path: Path | None, *, local: bool
) -> None:
    """Time the float zoo encoder named by the manifest, or record why it was skipped."""
    name = "torch"
    reason = None
    model = cr = None
    if not local:
        reason = "the torch runtime runs only on the local target"
    elif manifest_path is None:
        reason = "no manifest.json beside the artifacts: the torch encoder needs a model and CR"
    else:
        model, cr, reason = _resolve_torch_model(manifest_path)
    if reason is None:
        name = f"torch:{model}-cr{cr}"
    perf.setdefault("results", [])
    if reason is not None:
        for count in settings.threads:
            perf["results"].append(_torch_record(name, count, settings.batch, "skipped", reason))
        return
    facts = _torch_facts(model, cr)
    perf.setdefault("artifacts", []).append(
        {
            "name": name,
            "path": None,
            "format": "torch",
            "role": "encoder",
            "precision": "fp32",
            "bytes": facts["params"] * 4,
            "gzip_bytes": None,
            "sha256": None,
            "params": facts["params"],
            "macs": facts["macs"],
            "macs_source": "torch flop counter",
            "model": model,
            "cr": cr,
            "weights": "zoo encoder as built; latency does not depend on weight values",
        }
    )
    for count in settings.threads:
        payload = {
            "model": model,
            "cr": cr,
            "name": name,
            "threads": count,
            "batch": settings.batch,
            "warmup": settings.warmup,
            "runs": settings.runs,
        }
        perf["results"].append(_run_torch_worker(payload, settings.timeout_s))


def _resolve_torch_model(manifest_path: Path) -> tuple[str | None, int | None, str | None]:
    """(model, cr, None) when the manifest names a zoo model and CR, else (None, None, why)."""
    from csideploy.models import list_models

    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return None, None, f"{manifest_path.name} is unreadable ({error})"
    facts = runner.manifest_facts(manifest, "")
    model, cr = facts["model"], facts["cr"]
    known = list_models()
    if model is None or cr is None:
        return None, None, f"{manifest_path.name} names no model and CR (keys model / cr)"
    if model.lower() not in known:
        return None, None, f"{manifest_path.name} names model {model!r}, not one of {known}"
    return model.lower(), cr, None


def _torch_facts(model: str, cr: int) -> dict[str, int]:
    import torch

    from csideploy.models import build, get_entry
    from csideploy.models.stats import count_macs, count_params

    encoder = build(model, cr).encoder
    example = torch.zeros(1, *get_entry(model).input_spec.shape)
    return {"params": count_params(encoder), "macs": count_macs(encoder, example)}


def _torch_record(name: str, threads: int, batch: int, status: str, reason: str | None) -> dict:
    return {
        "artifact": name,
        "runtime": "torch",
        "threads": threads,
        "batch": batch,
        "status": status,
        "reason": reason,
    }


def _run_torch_worker(payload: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The torch timing in a fresh interpreter with the thread variables set, like the runner's."""
    command = [sys.executable, "-m", "csideploy.bench.torch_timing", json.dumps(payload)]
    base = _torch_record(payload["name"], payload["threads"], payload["batch"], "error", None)
    return {**base, **runner.run_json_worker(command, payload["threads"], timeout)}


def torch_worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Time `build(model, cr).encoder` with the runner's timing loop (`runner.time_calls`)."""
    rss_start = runner.peak_rss_bytes()
    import torch

    from csideploy.models import build, get_entry

    torch.set_num_threads(payload["threads"])
    rss_imported = runner.peak_rss_bytes()
    started = time.perf_counter_ns()
    encoder = build(payload["model"], payload["cr"]).encoder.eval()
    init_ns = time.perf_counter_ns() - started
    shape = (payload["batch"], *get_entry(payload["model"]).input_spec.shape)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        output, first_ns, timings = runner.time_calls(
            encoder, x, payload["warmup"], payload["runs"]
        )
    rss_end = runner.peak_rss_bytes()
    return {
        "status": "ok",
        "runtime_version": torch.__version__,
        "runtime_package": "torch",
        "input": [{"name": "x", "shape": list(shape), "dtype": "float32"}],
        "output": [{"name": "codeword", "shape": list(output.shape), "dtype": "float32"}],
        "output_finite": bool(torch.isfinite(output).all()),
        "init_ms": round(init_ns / 1e6, 3),
        "first_inference_ms": round(first_ns / 1e6, 3),
        "latency_us": runner.latency_summary(timings),
        "timings_us": [round(t / 1e3, 3) for t in timings],
        "rss_start_bytes": rss_start,
        "rss_after_import_bytes": rss_imported,
        "peak_rss_bytes": rss_end,
        "model_rss_bytes": None
        if rss_end is None or rss_imported is None
        else rss_end - rss_imported,
    }


if __name__ == "__main__":
    if len(sys.argv) == 2:
        print(json.dumps(torch_worker(json.loads(sys.argv[1]))))
        sys.exit(0)
    sys.exit("usage: python -m csideploy.bench.torch_timing JSON")
