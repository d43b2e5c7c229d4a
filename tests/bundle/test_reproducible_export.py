"""Two exports with the same inputs give byte-identical bundle files and tarballs."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from csideploy.bundle.pack import pack_bundle
from csideploy.bundle.verify import verify_bundle
from csideploy.models import build
from csideploy.models.checkpoint import save_checkpoint
from csideploy.pipeline.config import ExportConfig
from csideploy.pipeline.run import run_export


def test_repeat_exports_give_identical_bundles_and_tarballs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "crnet64.pt", build("crnet", 64), metadata={})
    outs = []
    for name in ("a", "b"):
        config = ExportConfig(
            model="crnet",
            checkpoint=str(checkpoint),
            int8="dynamic",
            formats=("onnx",),
            eval_samples=64,
            calib_samples=64,
            latency_runs=5,
            out=str(tmp_path / name / "crnet-cr64"),
            max_nmse_drop=float("inf"),
        )
        outs.append(run_export(config).out_dir)
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    assert "report.md" in manifest["measurements"]
    shipped = ["manifest.json", *(entry["path"] for entry in manifest["files"])]
    for rel in shipped:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    tarballs = [pack_bundle(out) for out in outs]
    assert tarballs[0].read_bytes() == tarballs[1].read_bytes()
    for path in (outs[0], tarballs[0]):
        report = verify_bundle(path)
        assert report.ok, report.failures
