"""Export building blocks: numerics gates and latency.

The export itself is `csideploy.pipeline` (`run_export(ExportConfig(...))`); formats are in
`csideploy.formats`, INT8 methods in `csideploy.quantize`. The building blocks here
(`check_parity`, `check_nmse_drop`, `onnx_latency`) load on first use. The option constants
below are importable without loading torch or onnx, so the command line starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

DEFAULT_CALIB_SAMPLES = 256
DEFAULT_EVAL_SAMPLES = 1000
MIN_CALIB_SAMPLES = 32
MIN_EVAL_SAMPLES = 16
DEFAULT_OPSET = 18
DEFAULT_MAX_NMSE_DROP_DB = 0.3
DEFAULT_MIN_CODEWORD_SQNR_DB = 15.0
DEFAULT_MAX_FIDELITY_NMSE_DB = -15.0
INT8_LAYER_CHOICES = ("auto", "accuracy", "all")

_LAZY = {
    "numerics": (
        "FloatReference",
        "GateResult",
        "NmseGateError",
        "Numerics",
        "check_nmse_drop",
        "check_parity",
    ),
    "latency": ("LatencyResult", "onnx_latency"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}

__all__ = [
    "DEFAULT_CALIB_SAMPLES",
    "DEFAULT_EVAL_SAMPLES",
    "DEFAULT_MAX_FIDELITY_NMSE_DB",
    "DEFAULT_MAX_NMSE_DROP_DB",
    "DEFAULT_MIN_CODEWORD_SQNR_DB",
    "DEFAULT_OPSET",
    "INT8_LAYER_CHOICES",
    "MIN_CALIB_SAMPLES",
    "MIN_EVAL_SAMPLES",
    *sorted(_WHERE),
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
