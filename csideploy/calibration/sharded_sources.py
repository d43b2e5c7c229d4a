"""`data synth --workers N | --ray-address ADDR`: the sharded writer of each source.

Built-in data in shards are byte for byte the single-process files; Sionna data in shards
are the same for any number of workers (one stream per shard, `sionna_shards`).
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
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write the built-in data set in shards on Ray; returns (files by role, manifest)."""
    workers, address = cluster
    check_choice(workers, address)
    if source != "builtin" or paired:
        what = "paired built-in data" if paired else f"--source {source}"
        raise CsiDeployError(
            f"--workers / --ray-address shard the built-in (unpaired) and sionna sources; "
            f"{what} runs in one process (leave both out)"
        )
    from csideploy.calibration.synthetic_shards import write_sharded_synthetic

    with ray_runtime(workers, address) as ray:
        files = write_sharded_synthetic(out_dir, ray=ray, **common)
    return files, json.loads(files["manifest"].read_text())


def write_sharded_sionna_on(
    out_dir: Path, cluster: tuple[int | None, str | None], options: dict[str, Any]
) -> Any:
    """Write a Sionna data set in shards on Ray (`sionna_dataset.write_sionna_dataset`
    options); returns its WrittenDataset."""
    from csideploy.calibration.sionna_shards import write_sharded_sionna
    from csideploy.calibration.sionna_source import import_sionna

    workers, address = cluster
    check_choice(workers, address)
    import_sionna()  # a missing extra is an error before Ray starts
    with ray_runtime(workers, address) as ray:
        return write_sharded_sionna(out_dir, ray=ray, **options)
