"""Writing files so that readers never see half of one.

A neutral home (it imports nothing from csideploy) for the writer that reports, bundle
manifests and perf documents share, so none of those packages imports another to write a file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> Path:
    """Write `path` through a temporary sibling and a rename, with the usual permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    encoding = None if isinstance(data, bytes) else "utf-8"
    with tempfile.NamedTemporaryFile(
        mode,
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=".tmp",
        delete=False,
        encoding=encoding,
    ) as handle:
        handle.write(data)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(handle.name, 0o666 & ~umask)
    os.replace(handle.name, path)
    return path
