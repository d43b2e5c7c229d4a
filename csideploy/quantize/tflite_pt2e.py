"""TFLite INT8 through PT2E: full-integer (static, calibrated) and dynamic-range.

litert-torch's PT2E quantizer (per-channel symmetric int8 weights, per-tensor affine int8
activations) on a `torch.export` graph, with the CSI annotation rules of `tflite_pt2e_rules`.
Static INT8 calibrates a PT2E-prepared graph on the given CSI. With
`TfliteExportConfig.layers` only those modules are annotated (the quantizer's global config
stays empty), so everything else stays float and the file keeps float I/O: the mixed
precision the export's layer plan chooses. Without it every layer is quantized.

`pt2e_export_tflite` is `csideploy.formats.tflite.export_tflite` with this converter: the one
entry point for a quantized `.tflite` file (it writes fp32 too).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from csideploy.errors import MissingDependencyError
from csideploy.formats.tflite import (
    TFLITE_EXTRA_MESSAGE,
    Converter,
    TfliteArtifact,
    TfliteExportConfig,
    export_tflite,
    float_convert,
    quiet_converter,
)
from csideploy.quantize.tflite_pt2e_rules import (
    float_scalars,
    leave_feature_math_float,
    leave_levelling_float,
    observe_bare_concatenations,
    observe_float_only,
    observe_model_inputs,
    share_fixed_outputs,
    share_padding_scales,
)


def pt2e_export_tflite(
    encoder: nn.Module,
    out_path: str | os.PathLike[str],
    *,
    precision: str,
    calibration: np.ndarray | None = None,
    io: str = "int8",
    layout: str = "nchw",
    input_name: str = "csi",
    output_name: str = "codeword",
    output_names: Sequence[str] | None = None,
    calibration_batch: int = 64,
    overwrite: bool = False,
    layers: Sequence[str] | None = None,
    convert: Converter | None = None,
) -> TfliteArtifact:
    """`export_tflite` quantized by PT2E: ``int8`` (needs `calibration`), ``dynamic`` or
    ``fp32``; the arguments are `csideploy.formats.tflite.export_tflite`'s (`convert`:
    `pt2e_convert` unless given, e.g. `csideploy.quantize.qat.qat_converter`)."""
    return export_tflite(
        encoder,
        out_path,
        precision=precision,
        calibration=calibration,
        io=io,
        layout=layout,
        input_name=input_name,
        output_name=output_name,
        output_names=output_names,
        calibration_batch=calibration_batch,
        overwrite=overwrite,
        layers=layers,
        convert=convert or pt2e_convert,
    )


def with_pt2e(litert: SimpleNamespace) -> SimpleNamespace:
    """The converter entry points plus PT2E's, or MissingDependencyError naming the extra."""
    try:
        from litert_torch.quantize import pt2e_quantizer
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import (
            convert_pt2e,
            prepare_pt2e,
            prepare_qat_pt2e,
        )
    except ImportError as error:
        raise MissingDependencyError(f"{TFLITE_EXTRA_MESSAGE} ({error})") from error
    return SimpleNamespace(
        **vars(litert),
        PT2EQuantizer=_csi_quantizer(pt2e_quantizer.PT2EQuantizer),
        quantization_config=pt2e_quantizer.get_symmetric_quantization_config,
        QuantConfig=QuantConfig,
        prepare_pt2e=prepare_pt2e,
        prepare_qat_pt2e=prepare_qat_pt2e,
        convert_pt2e=convert_pt2e,
    )


def pt2e_convert(
    litert: SimpleNamespace,
    module: nn.Module,
    sample: torch.Tensor,
    config: TfliteExportConfig,
    calibration: np.ndarray | None,
) -> bytes:
    """Flatbuffer bytes of `module` traced at `sample`, quantized as `config` asks (a
    `csideploy.formats.tflite.Converter`)."""
    if config.precision == "fp32":
        return float_convert(litert, module, sample, config, calibration)
    litert = with_pt2e(litert)
    with quiet_converter(litert), torch.no_grad():
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
        return flatbuffer(litert, quantized, quantizer, config, sample)


def flatbuffer(
    litert: SimpleNamespace,
    quantized: nn.Module,
    quantizer: Any,
    config: TfliteExportConfig,
    sample: torch.Tensor,
) -> bytes:
    """Flatbuffer bytes of a `convert_pt2e` graph (calibrated or fake-quantized), by the
    LiteRT converter in `quantizer`'s mode."""
    with quiet_converter(litert), torch.no_grad():
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


def _quantizer(litert: SimpleNamespace, config: TfliteExportConfig, *, qat: bool = False) -> Any:
    """Per-channel int8 weights, int8 activations: for every layer, or only `config.layers`
    (module paths inside the encoder, which `_Boundary` holds as `encoder`); `qat`: fake
    quantization for training (`csideploy.quantize.qat`), the same annotation."""
    quantization = _quantization(litert, config, qat=qat)
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


def _quantization(litert: SimpleNamespace, config: TfliteExportConfig, *, qat: bool = False) -> Any:
    return litert.quantization_config(
        is_per_channel=True, is_dynamic=config.precision == "dynamic", is_qat=qat
    )


def layer_quantizer(litert: SimpleNamespace, config: TfliteExportConfig, *, qat: bool) -> Any:
    """The quantizer `pt2e_convert` uses for `config` (`litert` from `with_pt2e`)."""
    return _quantizer(litert, config, qat=qat)


def _csi_quantizer(base: type) -> type:
    """litert-torch's PT2E quantizer with the fixes a CSI encoder needs.

    - One shared scale for wrap padding: a `cat` of a tensor with slices of itself (circular
      padding) and those slices take the tensor's own quantization. INT8 SLICE and
      CONCATENATION need equal input and output scales, and separate observers on the slices
      and the padded result break that (the converter refuses the graph).
    - One shared observer on every other `cat` it leaves bare. Its `cat` annotator finds
      concatenations through source-function metadata that `torch.export` no longer records for
      `torch.cat`, so it annotates none. The converter still emits an int8 CONCATENATION, whose
      kernel needs one scale for all inputs, and gives it the first input's scale, which clips
      the others (CLNet's attention merge lost ~30 dB SQNR that way). One observer that sees
      every input gives all of them and the output one range, with no rescale in between.
    - A consumer of a fixed-range output (sigmoid) reads it with that output's quantization
      instead of quantizing it again.
    - Python integer scalars multiplying or offsetting a float tensor become float constants
      (the base class would make them int64 buffers and put a histogram observer on them).
    - Observers on float tensors only: index buffers, comparisons and cast results are never
      observed, whatever an annotator asked for.
    - The levelling arithmetic in front of an integer cast (see `leave_levelling_float`) is
      left unquantized, so that the cast rounds real values.
    - Feature math on the input before the first learned layer (DualNet-MP's magnitude,
      cosine and sign matrices; see `leave_feature_math_float`) is left unquantized; the
      first learned layer's input is quantized as usual.
    - A float model input that no annotated op observes (a graph that starts with slicing or
      elementwise feature math) gets an observer of its own, so that the file can take int8.
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class CsiQuantizer(base):  # type: ignore[misc, valid-type]
        # QAT: the export copy has its BatchNorms folded, so the conv + BN patterns match
        # nothing, and tracing them fails on this torch; fake quantization needs none.
        STATIC_QAT_ONLY_OPS: ClassVar[list[str]] = []

        def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            float_scalars(model)
            return super().transform_for_annotation(model)

        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            layers = getattr(self, "layer_config", None)
            if layers is not None:  # selected layers only (see `_quantizer`)
                quantization, inside = layers
                self._annotate_all_static_patterns(model, quantization, inside)
                observe_float_only(model)
                return model
            model = super().annotate(model)
            config = self.global_config
            if config is not None and config.input_activation is not None:  # static
                leave_feature_math_float(model)
                share_padding_scales(model, config, QuantizationAnnotation)
                observe_bare_concatenations(model, config, QuantizationAnnotation)
                share_fixed_outputs(model)
                observe_model_inputs(model, config, QuantizationAnnotation)
                leave_levelling_float(model)
            observe_float_only(model)
            return model

    return CsiQuantizer
