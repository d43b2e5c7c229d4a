"""TFLite export of a UE encoder for mobile CPUs: fp32, dynamic-range INT8, full-integer INT8.

Conversion goes through litert-torch. Quantization uses its PT2E quantizer (per-channel
symmetric int8 weights, per-tensor affine int8 activations) on a `torch.export` graph:

- ``int8``: static, full integer. The prepared graph is calibrated on the given CSI (the
  same array the ONNX path calibrates with); the converter then emits int8 kernels end to
  end, and folds the quantization of the model input and output into the I/O tensors, so
  the file takes and returns int8 with a recorded scale and zero point. With
  ``io="float"`` the file gets a QUANTIZE op in front and a DEQUANTIZE op behind
  instead (a flatbuffer edit; the integer graph is the same), for callers that keep float
  buffers. Where the converter hands back float I/O (a dequantized output that float ops
  inside the graph also read), ``io="int8"`` moves the boundary to int8 by a flatbuffer edit
  that keeps what those ops need.
- ``dynamic``: dynamic-range; int8 weights, float activations quantized on the fly by the
  hybrid kernels. No calibration.
- ``fp32``: plain float.

Every file is single-signature ``serving_default`` with one input (`input_name`, default
``csi``), fixed batch 1. An encoder returning one tensor gets one output (`output_name`, default
``codeword``); one returning a tuple (a handset graph with several codeword parts) gets one
output per element, named by `output_names` and listed in the order torch returns them, in the
signature and in the subgraph alike. ``layout="nhwc"`` wraps the encoder with a permute so
that the handset feeds (1, 32, 32, 2) channel-last buffers; the converter cancels the permute
against its own layout transposes.

Integer outputs (an encoder that casts its quantized codeword to int8 / uint8 / int16 / int32)
stay integer tensors holding the raw values in every precision: no scale, no DEQUANTIZE. Only
float outputs follow `io`. In ``int8`` the quantizer observes float tensors only (never an index
buffer or a cast result), and the levelling arithmetic right before an integer cast (scale,
offset, round, clamp) stays float so that the cast sees real levels, not int8 activations.

This module converts and checks the contract; ``fp32`` converts here, while ``int8`` and
``dynamic`` take their converter from the INT8 method that quantizes them
(`csideploy.quantize.tflite_pt2e.pt2e_export_tflite`). `interface` rewrites the flatbuffer I/O,
`inspect` reads a file, `config` holds the options.

litert-torch, torchao and ai-edge-litert are imported only when a conversion runs: a missing
``tflite`` extra surfaces as `MissingDependencyError`, never as an import failure elsewhere.
"""


from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from csideploy.errors import (
    CsiDeployError,
    MissingDependencyError,
    OutputExistsError,
)
from csideploy.formats.base import Format, register_format
from csideploy.formats.tflite.config import (
    CSI_NCHW,
    FILE_NAMES,
    IO_TYPES,
    LAYOUTS,
    PRECISIONS,
    SIGNATURE_KEY,
    TFLITE_EXTRA_MESSAGE,
    TfliteExportConfig,
    TorchOutput,
    check_calibration,
)
from csideploy.formats.tflite.inspect import (
    TensorSpec,
    TfliteGraphInfo,
    inspect_bytes,
    inspect_tflite,
)
from csideploy.formats.tflite.interface import set_interface

__all__ = [
    "CSI_NCHW", "FILE_NAMES", "IO_TYPES", "LAYOUTS", "PRECISIONS", "SIGNATURE_KEY",
    "TFLITE_EXTRA_MESSAGE", "Converter", "TensorSpec", "TfliteArtifact", "TfliteExportConfig",
    "TfliteGraphInfo", "export_tflite", "float_convert", "import_litert", "inspect_tflite",
    "quiet_converter",
]

Converter = Callable[
    [SimpleNamespace, nn.Module, torch.Tensor, TfliteExportConfig, "np.ndarray | None"], bytes
]
"""`(litert, module, sample, config, calibration) -> flatbuffer bytes`."""


@dataclass(frozen=True)
class TfliteArtifact:
    """A written `.tflite` encoder and its contract; `outputs` are in torch order."""

    path: Path
    precision: str
    layout: str
    io_dtype: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    ops: tuple[str, ...]
    op_count: int
    float_ops: tuple[str, ...]
    weight_dtypes: tuple[str, ...]
    num_bytes: int
    sha256: str
    calibration_samples: int | None
    conversion_seconds: float
    converter: str

    @property
    def output(self) -> TensorSpec:
        """The first (for most encoders the only) output."""
        return self.outputs[0]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the path as a string; `output` repeats the first of `outputs`)."""
        data = asdict(self)
        data["path"] = str(self.path)
        data["input"] = self.input.to_dict()
        data["outputs"] = [spec.to_dict() for spec in self.outputs]
        data["output"] = self.output.to_dict()
        return data



def export_tflite(
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
    """Convert `encoder` (NCHW (N, 2, 32, 32) -> (N, M), or a tuple of such outputs) to a
    `.tflite` file at `out_path`.

    An encoder returning a tuple needs `output_names`, one per element in torch order; the
    file's outputs carry those names in that order. `calibration` (NCHW float CSI, whatever
    `layout` is) is required for ``int8`` and unused otherwise. The file is written to a
    temporary sibling and renamed into place. `layers`: ``int8`` with only these modules
    (paths inside `encoder`) quantized and float I/O (see `TfliteExportConfig.layers`).
    `convert`: the converter of a quantized precision (an INT8 method's); ``fp32`` needs none.
    """
    config = TfliteExportConfig(
        precision=precision,
        io=io,
        layout=layout,
        input_name=input_name,
        output_name=output_name,
        output_names=None if output_names is None else tuple(output_names),
        calibration_batch=calibration_batch,
        layers=None if layers is None else tuple(layers),
    )
    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"{out_path} exists; pass overwrite=True to replace it")
    if convert is None and config.precision != "fp32":
        raise CsiDeployError(
            f"{config.precision} TFLite needs a quantizing converter: "
            "use csideploy.quantize.tflite_pt2e.pt2e_export_tflite"
        )
    if config.precision == "int8":
        calibration = check_calibration(calibration)
    module = _Boundary(_frozen_copy(encoder), nhwc=config.layout == "nhwc").eval()
    sample = torch.rand(config.input_shape, generator=torch.Generator().manual_seed(0))
    outputs = _torch_outputs(module, sample, config)
    litert = import_litert()

    started = time.perf_counter()
    model_bytes = (convert or float_convert)(litert, module, sample, config, calibration)
    model_bytes = set_interface(litert, model_bytes, config, outputs)
    seconds = time.perf_counter() - started
    info = inspect_bytes(model_bytes, str(out_path))
    _check_contract(info, config, out_path, outputs)
    _write_atomic(out_path, model_bytes, overwrite=overwrite)
    return TfliteArtifact(
        path=out_path,
        precision=config.precision,
        layout=config.layout,
        io_dtype=config.io_dtype,
        input=info.input,
        outputs=info.outputs,
        ops=info.ops,
        op_count=info.op_count,
        float_ops=info.float_ops,
        weight_dtypes=info.weight_dtypes,
        num_bytes=len(model_bytes),
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        calibration_samples=None if calibration is None else len(calibration),
        conversion_seconds=round(seconds, 3),
        converter=f"litert-torch {litert.version}",
    )



# --- conversion -----------------------------------------------------------------------------


class _Boundary(nn.Module):
    """The encoder as the handset sees it: optional NHWC -> NCHW permute at the input."""

    def __init__(self, encoder: nn.Module, *, nhwc: bool) -> None:
        super().__init__()
        self.encoder = encoder
        self.nhwc = nhwc

    def forward(self, csi: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.nhwc:
            csi = csi.permute(0, 3, 1, 2)
        return self.encoder(csi)


_Boundary.__module__ = "csideploy.export.tflite"
"""The converter writes this wrapper's class path into every tensor name of the file; it is
pinned so that where the code lives does not change the bytes of the files it writes."""

_INTEGER_OUTPUT_DTYPES = {
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.int16: "int16",
    torch.int32: "int32",
}


def _torch_outputs(
    module: nn.Module, sample: torch.Tensor, config: TfliteExportConfig
) -> tuple[TorchOutput, ...]:
    """Name, dtype and batch-1 shape of every output `module` returns, checked against the
    names the config gives (one per output) before anything is converted."""
    with torch.no_grad():
        result = module(sample)
    tensors = tuple(result) if isinstance(result, (tuple, list)) else (result,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError("the encoder must return a tensor or a tuple of tensors")
    names = config.names
    if len(tensors) != len(names):
        if config.output_names is None:
            raise ValueError(
                f"the encoder returns {len(tensors)} outputs; pass output_names with one name "
                "per output, in the order the encoder returns them"
            )
        raise ValueError(
            f"output_names has {len(names)} names ({', '.join(names)}) but the encoder "
            f"returns {len(tensors)} outputs"
        )
    specs = []
    for name, tensor in zip(names, tensors, strict=True):
        if tensor.dtype == torch.float32:
            dtype = "float32"
        elif tensor.dtype in _INTEGER_OUTPUT_DTYPES:
            dtype = _INTEGER_OUTPUT_DTYPES[tensor.dtype]
        else:
            raise ValueError(
                f"output {name!r} is {tensor.dtype}; a TFLite encoder output must be float32, "
                "int8, uint8, int16 or int32 (cast it inside the module)"
            )
        specs.append(TorchOutput(name, dtype, tuple(int(d) for d in tensor.shape)))
    return tuple(specs)


def import_litert() -> SimpleNamespace:
    """The converter entry points, or MissingDependencyError naming the `tflite` extra."""
    try:
        import litert_torch
    except ImportError as error:
        raise MissingDependencyError(f"{TFLITE_EXTRA_MESSAGE} ({error})") from error
    return SimpleNamespace(
        convert=litert_torch.convert,
        version=litert_torch.__version__,
        config=litert_torch.config,
    )


@contextlib.contextmanager
def quiet_converter(litert: SimpleNamespace) -> Iterator[None]:
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


def float_convert(
    litert: SimpleNamespace,
    module: nn.Module,
    sample: torch.Tensor,
    config: TfliteExportConfig,
    calibration: np.ndarray | None,
) -> bytes:
    """Flatbuffer bytes of `module` traced at `sample`, in float (``fp32`` only)."""
    if config.precision != "fp32":
        raise CsiDeployError(f"float_convert converts fp32 only, not {config.precision}")
    with quiet_converter(litert), torch.no_grad():
        return bytes(litert.convert(module, (sample,)).model_content())


def _frozen_copy(encoder: nn.Module) -> nn.Module:
    """An eval-mode copy, so that conversion never touches the caller's module."""
    if not isinstance(encoder, nn.Module):
        raise TypeError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
    return copy.deepcopy(encoder).eval()


# --- flatbuffer interface -------------------------------------------------------------------
def _check_contract(
    info: TfliteGraphInfo,
    config: TfliteExportConfig,
    path: Path,
    outputs: Sequence[TorchOutput],
) -> None:
    """The written file must have the input, output names, order, dtypes and shapes promised:
    the input and float outputs in `config.io_dtype`, integer outputs in the dtype torch
    produced and without a scale."""
    problems = []
    hint = ""
    if config.io_dtype == "int8":
        hint = " (a boundary op stayed float; io='float' keeps float I/O around int8 kernels)"
    if info.input.dtype != config.io_dtype:
        problems.append(f"input dtype {info.input.dtype}, expected {config.io_dtype}{hint}")
    if info.input.shape != config.input_shape:
        problems.append(f"input shape {info.input.shape}, expected {config.input_shape}")
    names = tuple(spec.name for spec in info.outputs)
    if names != config.names:
        problems.append(f"outputs {list(names)}, expected {list(config.names)}")
    else:
        for spec, output in zip(info.outputs, outputs, strict=True):
            problems += _output_problems(spec, output, config.io_dtype, hint)
    if problems:
        raise CsiDeployError(f"{path}: converted file breaks its contract: {'; '.join(problems)}")


def _output_problems(spec: TensorSpec, output: TorchOutput, io_dtype: str, hint: str) -> list[str]:
    problems = []
    expected = output.dtype if output.integer else io_dtype
    if spec.dtype != expected:
        problems.append(
            f"output {spec.name!r} dtype {spec.dtype}, expected {expected}"
            + ("" if output.integer else hint)
        )
    if output.integer and spec.scale is not None:
        problems.append(f"integer output {spec.name!r} carries a quantization scale")
    if spec.shape != output.shape:
        problems.append(f"output {spec.name!r} shape {spec.shape}, expected {output.shape}")
    return problems


def _write_atomic(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write `data` to a temporary sibling directory, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        staged = staging / path.name
        staged.write_bytes(data)
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} exists; pass overwrite=True to replace it")
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


register_format(
    Format(
        name="tflite",
        suffix=".tflite",
        runtime="litert",
        export=export_tflite,
        int8=("int8", "dynamic"),
        extra="tflite",
    )
)
