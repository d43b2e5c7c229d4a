"""`data synth --workers N | --ray-address ADDR`: pick the sharded writer of the source.

Each sharded writer gives, for any number of workers (and without Ray), the same files as
the others; for the built-in source they are byte for byte the single-process files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from csideploy.cluster.runtime import check_choice, ray_runtime
from csideploy.errors import CsiDeployError


def write_sharded(
    out_dir: Path,
    source: str,
    paired: bool,
    cluster: tuple[int | None, str | None],
    common: dict[str, Any],
    extra: dict[str, Any],
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write the data set of `source` in shards on Ray; returns (files by role, manifest)."""
    workers, address = cluster
    check_choice(workers, address)
    if source != "builtin" or paired:
        what = "paired data" if paired else f"--source {source}"
        raise CsiDeployError(
            f"--workers / --ray-address shard the built-in source only; {what} runs in one "
            "process (leave both out)"
        )
    from csideploy.calibration.synthetic_shards import write_sharded_synthetic

    with ray_runtime(workers, address) as ray:
        files = write_sharded_synthetic(out_dir, ray=ray, **common)
    return files, json.loads(files["manifest"].read_text())
