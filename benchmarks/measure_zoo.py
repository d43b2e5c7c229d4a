"""Measure every shipped checkpoint and write its figures into `csideploy/checkpoints/zoo.json`.

For each entry of the index: sha256 and size of the file, NMSE (`linear` convention) on the
built-in evaluation set of its scenario (`generate(n, scenario, seed=EVALUATION_SEED)`, the
same samples `export` evaluates on by default) and, for indoor entries, on the COST2100-model
indoor samples kept in `tests/fixtures/cost2100/`. The index is rewritten atomically; the
figures are what `csideploy models` prints and what `tests/models/test_zoo_weights.py`
re-measures. Run: `python benchmarks/measure_zoo.py [--samples N]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from csideploy.calibration.io import load_csi
from csideploy.calibration.synthetic import EVALUATION_SEED, generate
from csideploy.evaluate import evaluate
from csideploy.models.checkpoint import load_checkpoint, write_atomic
from csideploy.models.zoo_weights import CHECKPOINT_DIR, INDEX_NAME

ROOT = Path(__file__).resolve().parents[1]
COST2100_INDOOR = ROOT / "tests" / "fixtures" / "cost2100" / "cost2100_indoor.mat"
BUILTIN_SAMPLES = 1000


def builtin_figure(model: torch.nn.Module, scenario: str, n: int) -> dict[str, Any]:
    x = generate(n, scenario=scenario, seed=EVALUATION_SEED)
    return {
        "db": round(evaluate(model, x).nmse_db, 3),
        "samples": n,
        "convention": "linear",
        "data": f"built-in {scenario}, generate(n={n}, seed={EVALUATION_SEED})",
    }


def cost2100_figure(model: torch.nn.Module) -> dict[str, Any]:
    x = load_csi(COST2100_INDOOR)
    return {
        "db": round(evaluate(model, x).nmse_db, 3),
        "samples": len(x),
        "convention": "linear",
        "data": "COST2100-model indoor, tests/fixtures/cost2100/cost2100_indoor.mat",
    }


def measure(entry: dict[str, Any], n: int) -> dict[str, Any]:
    path = CHECKPOINT_DIR / entry["file"]
    model = load_checkpoint(path, model=entry["model"], cr=entry["cr"]).model
    nmse = {"builtin": builtin_figure(model, entry["scenario"], n)}
    if entry["scenario"] == "indoor":
        nmse["cost2100"] = cost2100_figure(model)
    data = path.read_bytes()
    return {**entry, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "nmse": nmse}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=BUILTIN_SAMPLES)
    args = parser.parse_args()
    torch.set_num_threads(1)
    index_path = CHECKPOINT_DIR / INDEX_NAME
    index = json.loads(index_path.read_text())
    index["checkpoints"] = [measure(e, args.samples) for e in index["checkpoints"]]
    for e in index["checkpoints"]:
        figures = ", ".join(f"{k} {v['db']:+.2f} dB ({v['samples']})" for k, v in e["nmse"].items())
        print(f"{e['model']:>10} CR 1/{e['cr']:<3} {e['scenario']:8s} {figures}")
    text = json.dumps(index, indent=2) + "\n"
    write_atomic(index_path, lambda fh: fh.write(text.encode()))


if __name__ == "__main__":
    main()
