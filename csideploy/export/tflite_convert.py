"""The litert-torch conversion of one encoder: float, dynamic-range or static INT8.

Static INT8 calibrates a PT2E-prepared graph on the given CSI. With
`TfliteExportConfig.layers` only those modules are annotated (the quantizer's global config
stays empty), so everything else stays float and the file keeps float I/O: the mixed
precision the export's layer plan chooses. Without it every layer is quantized.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from csideploy.export.tflite import TfliteExportConfig


@contextlib.contextmanager
def _quiet_converter(litert: SimpleNamespace) -> Iterator[None]:
    """Silence litert-torch's progress printing for the duration of a conversion."""
    previous = os.environ.get("LITERT_TORCH_SHOW_PROGRESS")
    litert.config.show_progress = False
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LITERT_TORCH_SHOW_PROGRESS", None)
        else:
            os.environ["LITERT_TORCH_SHOW_PROGRESS"] = previous


def convert(
    litert: SimpleNamespace,
    module: nn.Module,
    sample: torch.Tensor,
    config: TfliteExportConfig,
    calibration: np.ndarray | None,
) -> bytes:
    """Flatbuffer bytes of `module` traced at `sample`, quantized as `config` asks."""
    with _quiet_converter(litert), torch.no_grad():
        if config.precision == "fp32":
            return bytes(litert.convert(module, (sample,)).model_content())
        quantizer = _quantizer(litert, config)
        if config.precision == "dynamic":
            # Activations are quantized at run time; one pass records the weight ranges.
            graph = torch.export.export(module, (sample,)).module()
            prepared = litert.prepare_pt2e(graph, quantizer)
            prepared(sample)
        else:
            assert calibration is not None
            samples = _to_layout(calibration, config)
            prepared = _calibrated(litert, module, quantizer, samples, config)
        quantized = litert.convert_pt2e(prepared, fold_quantize=False)
        # Traced from an eval-mode module, the graph already has eval semantics; exported
        # GraphModules refuse .eval(), so set the flag the converter checks.
        quantized.training = False
        if quantizer.global_config is None:
            # The graph is annotated already; the converter only reads the global config's
            # mode (static vs dynamic) from the quantizer it is given.
            quantizer.global_config = _quantization(litert, config)
        edge = litert.convert(
            quantized, (sample,), quant_config=litert.QuantConfig(pt2e_quantizer=quantizer)
        )
        return bytes(edge.model_content())


def _calibrated(
    litert: SimpleNamespace,
    module: nn.Module,
    quantizer: Any,
    calibration: torch.Tensor,
    config: TfliteExportConfig,
) -> nn.Module:
    """The PT2E-prepared graph after its observers have seen every calibration sample.

    The graph is exported with a dynamic batch so that calibration runs in chunks; an encoder
    whose graph cannot be traced that way is calibrated one sample at a time.
    """
    chunk = config.calibration_batch
    try:
        batch = torch.export.Dim("batch", min=1, max=max(chunk, 2))
        graph = torch.export.export(module, (calibration[:2],), dynamic_shapes=({0: batch},))
    except Exception:  # any tracing failure: fall back to the batch-1 graph
        graph = torch.export.export(module, (calibration[:1],))
        chunk = 1
    prepared = litert.prepare_pt2e(graph.module(), quantizer)
    for start in range(0, len(calibration), chunk):
        prepared(calibration[start : start + chunk])
    return prepared


def _to_layout(calibration: np.ndarray, config: TfliteExportConfig) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(calibration, dtype=np.float32))
    if config.layout == "nhwc":
        tensor = tensor.permute(0, 2, 3, 1).contiguous()
    if len(tensor) == 1:  # the dynamic-batch trace needs two samples
        tensor = tensor.repeat(2, 1, 1, 1)
    return tensor


def _quantizer(litert: SimpleNamespace, config: TfliteExportConfig) -> Any:
    """Per-channel int8 weights, int8 activations: for every layer, or only `config.layers`
    (module paths inside the encoder, which `_Boundary` holds as `encoder`)."""
    quantization = _quantization(litert, config)
    if config.layers is None or config.precision != "int8":
        return litert.PT2EQuantizer().set_global(quantization)
    quantizer = litert.PT2EQuantizer()
    paths = tuple(f"encoder.{path}" for path in config.layers)
    quantizer.layer_config = (quantization, from_modules(paths))
    return quantizer


def from_modules(paths: tuple[str, ...]) -> Callable[[Any], bool]:
    """A node filter: True for nodes traced inside one of the modules at `paths`.

    litert-torch's own module-name and module-type filters do not match the
    `nn_module_stack` that this torch records (a 9-character key prefix, type names as
    strings), so the paths are read from the stack's values.
    """

    def inside(node: Any) -> bool:
        stack = node.meta.get("nn_module_stack", {})
        return any(
            path == wanted or path.startswith(wanted + ".")
            for path, _ in stack.values()
            for wanted in paths
        )

    return inside


def _quantization(litert: SimpleNamespace, config: TfliteExportConfig) -> Any:
    return litert.quantization_config(is_per_channel=True, is_dynamic=config.precision == "dynamic")
