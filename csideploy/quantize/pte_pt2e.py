"""ExecuTorch INT8 by PT2E with the XNNPACK quantizer, for the `.pte` format.

`pt2e_step(precision, calibration, layers)` returns the step `formats.pte.export_pte` runs on the
exported program: annotate (only `layers` when given: the export's layer plan; an empty plan
quantizes nothing), calibrate one sample at a time, convert, re-export.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

CALIBRATION_BATCH = 1


def pt2e_step(
    precision: str, calibration: Any, layers: Sequence[str] | None = None
) -> Callable[[Any, tuple[torch.Tensor, ...]], Any]:
    """The quantizing step for `export_pte(..., quantize=...)`."""

    def step(exported: Any, example: tuple[torch.Tensor, ...]) -> Any:
        if layers is not None and len(layers) == 0:
            return exported
        return _quantized(exported, example, precision, calibration, layers)

    return step


def _quantized(
    exported: Any,
    example: tuple[torch.Tensor, ...],
    precision: str,
    calibration: Any,
    layers: Sequence[str] | None = None,
) -> Any:
    """PT2E: annotate with the XNNPACK quantizer (only `layers` when given), calibrate,
    convert, re-export."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = precision == "dynamic"
    quantizer = XNNPACKQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    )
    if layers is not None:
        from csideploy.quantize.tflite_pt2e import from_modules

        quantizer.set_filter_function(from_modules(tuple(layers)))
    prepared = prepare_pt2e(exported.module(), quantizer)
    if not dynamic:
        if calibration is None or len(calibration) == 0:
            raise ValueError("static INT8 needs calibration samples")
        data = torch.from_numpy(np.ascontiguousarray(calibration, dtype=np.float32))
        for start in range(0, len(data), CALIBRATION_BATCH):
            prepared(data[start : start + CALIBRATION_BATCH])
    else:
        prepared(*example)
    converted = convert_pt2e(prepared)
    return torch.export.export(converted, example, strict=False)
