"""Export building blocks: numerics gates and latency.

The export itself is `csideploy.pipeline` (`run_export(ExportConfig(...))`); formats are in
`csideploy.formats`, INT8 methods in `csideploy.quantize`. The building blocks here
(`check_parity`, `check_nmse_drop`) load on first use; the quick latency is
`csideploy.runner.quick_latency`. The export's option
defaults are `csideploy.defaults`.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "numerics": (
        "FloatReference",
        "GateResult",
        "NmseGateError",
        "Numerics",
        "check_nmse_drop",
        "check_parity",
    ),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
