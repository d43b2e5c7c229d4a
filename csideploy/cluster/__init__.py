"""Fanning work out over Ray: the one place that imports `ray` (lazily, optional extra).

`runtime.ray_runtime` starts a local Ray runtime (`--workers N`) or joins a cluster
(`--ray-address`); `shards.run_shards` runs a list of named, deterministic shards there (or
in this process without Ray), retries failures and keeps each finished shard's result, so a
rerun does only what is missing and the merged output never depends on the worker count.
"""
