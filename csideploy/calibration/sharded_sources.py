"""`data synth --workers N | --ray-address ADDR`: the sharded writer of each source.

Built-in data (paired or not) in shards are byte for byte the single-process files; Sionna
data in shards are the same for any number of workers (one stream per shard,
`sionna_shards`); COST2100 batches on Ray are byte for byte those drawn by local Octave
processes (`cost2100_shards`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from csideploy.cluster.runtime import check_choice, ray_runtime
from csideploy.errors import CsiDeployError


def cost2100_options(
    cost2100_dir: Path, workers: int | None, address: str | None
) -> dict[str, Any]:
    """`--source cost2100`'s writer options: `--workers N` keeps N local Octave processes
    (no Ray), `--ray-address` runs every batch as a Ray task; the files are the same."""
    if workers is not None and address is not None:
        raise CsiDeployError(
            "--source cost2100: --workers N runs N Octave processes here, --ray-address "
            "runs each batch on a Ray cluster: pick one"
        )
    if address is not None:
        return {"cost2100_dir": cost2100_dir, "cluster": (None, address)}
    return {"cost2100_dir": cost2100_dir, "workers": workers or 1}


def write_sharded(
    out_dir: Path,
    source: str,
    paired: bool,
    cluster: tuple[int | None, str | None],
    options: dict[str, Any],
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write built-in (paired: `ul_carrier_ghz` in `options`) or COST2100 data (its
    `cost2100_dir` in `options`) in shards on Ray; returns (files by role, manifest)."""
    workers, address = cluster
    check_choice(workers, address)
    options = dict(options)
    ul_ghz = options.pop("ul_carrier_ghz", None)
    if source == "cost2100":
        from csideploy.calibration.cost2100_source import find_octave, model_dir

        find_octave()  # a missing Octave or model folder is an error before Ray starts
        model_dir(options["cost2100_dir"])
        with ray_runtime(workers, address) as ray:
            from csideploy.calibration.cost2100_shards import write_sharded_cost2100

            files = write_sharded_cost2100(out_dir, ray=ray, **options)
        return files, json.loads(files["manifest"].read_text())
    if paired:
        from csideploy.calibration.paired_shards import write_sharded_paired

        ul_hz = None if ul_ghz is None else ul_ghz * 1e9
        with ray_runtime(workers, address) as ray:
            written = write_sharded_paired(out_dir, ray=ray, ul_carrier_hz=ul_hz, **options)
        return written.files, written.manifest
    from csideploy.calibration.synthetic_shards import write_sharded_synthetic

    with ray_runtime(workers, address) as ray:
        files = write_sharded_synthetic(out_dir, ray=ray, **options)
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
