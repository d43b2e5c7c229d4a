"""Run a `.tflite` encoder on LiteRT (or, on boards with nothing else, tflite-runtime).

Needs only numpy and one interpreter package, so a handset team or `csideploy verify` can
check an artifact without torch. `LiteRTModel.run_outputs` hides the integer I/O of a full-INT8
file: float CSI goes in, it is quantized with the input tensor's scale and zero point, and
every quantized output (one with a scale) is dequantized back to float; an integer output
without a scale (a handset graph's codeword levels or bits) comes back as its integer array.
Outputs are in the file's order, which `export_tflite` writes in the torch encoder's order.
`run` is the same for a single-output file; `run_raw_outputs` / `run_raw` feed and return the
tensors exactly as the file declares them.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from csideploy.errors import DataError, MissingDependencyError, ShapeError

if TYPE_CHECKING:
    from csideploy.export.latency import LatencyResult

TFLITE_EXTRA_HINT = "pip install 'csideploy[tflite]'"
DEFAULT_RUNTIMES = ("ai_edge_litert", "tflite_runtime")
"""Interpreter packages in order of preference: LiteRT first, tflite-runtime as fallback."""

CSI_NCHW = (2, 32, 32)
CSI_NHWC = (32, 32, 2)


@dataclass(frozen=True)
class InterpreterChoice:
    """Which interpreter class was loaded, from which package, and why others were skipped."""

    interpreter_class: type
    runtime: str
    skipped: tuple[str, ...] = ()


def _load_interpreter_class(preferred: Sequence[str] = DEFAULT_RUNTIMES) -> InterpreterChoice:
    """Import `<package>.interpreter.Interpreter` from the first package in `preferred` that works.

    Any failure to import counts as "not available" (tflite-runtime built against numpy 1
    raises on import under numpy 2, not only ImportError), and the reason is kept for the
    error message when none works.
    """
    skipped: list[str] = []
    for package in preferred:
        try:
            module = importlib.import_module(f"{package}.interpreter")
            interpreter_class = module.Interpreter
        except Exception as error:  # any import failure: try the next package
            skipped.append(f"{package}: {type(error).__name__}: {error}")
            continue
        return InterpreterChoice(interpreter_class, package, tuple(skipped))
    reasons = "; ".join(skipped) or "no runtime was named"
    raise MissingDependencyError(
        "running a .tflite file needs a LiteRT interpreter (ai-edge-litert, or tflite-runtime "
        f"as a fallback); install the 'tflite' extra: {TFLITE_EXTRA_HINT} ({reasons})"
    )


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Affine quantization as TFLite's QUANTIZE kernel does it (round half away from zero)."""
    info = np.iinfo(dtype)
    scaled = np.asarray(x, dtype=np.float32) / np.float32(scale)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Back to float32: (q - zero_point) * scale."""
    return ((q.astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


class LiteRTModel:
    """One `.tflite` file loaded into an interpreter (XNNPACK, `num_threads` threads).

    The model must have one input and at least one output. A fixed-batch file (the usual batch
    1) runs a larger batch one slice at a time; a file with a dynamic batch dimension is
    resized instead.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_threads: int = 1,
        *,
        runtimes: Sequence[str] = DEFAULT_RUNTIMES,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"TFLite model not found: {self.path}")
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        choice = _load_interpreter_class(runtimes)
        self.runtime = choice.runtime
        self.num_threads = num_threads
        try:
            self._interpreter = choice.interpreter_class(
                model_path=str(self.path), num_threads=num_threads
            )
        except ValueError as error:
            raise DataError(f"{self.path}: not a readable TFLite model ({error})") from error
        self._interpreter.allocate_tensors()
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
        if len(inputs) != 1 or not outputs:
            raise ShapeError(
                f"{self.path}: expected one input and at least one output tensor, "
                f"got {len(inputs)} inputs and {len(outputs)} outputs"
            )
        self._input = inputs[0]
        self._outputs = outputs
        self._batch = int(self._input["shape"][0])

    @property
    def input_details(self) -> list[dict[str, Any]]:
        """The interpreter's input details (name, index, shape, dtype, quantization)."""
        return self._interpreter.get_input_details()

    @property
    def output_details(self) -> list[dict[str, Any]]:
        """The interpreter's output details (name, index, shape, dtype, quantization)."""
        return self._interpreter.get_output_details()

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The declared input shape, batch included (e.g. (1, 2, 32, 32))."""
        return tuple(int(d) for d in self._input["shape"])

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    @property
    def output_names(self) -> tuple[str, ...]:
        """The output tensor names, in the file's output order."""
        return tuple(str(detail["name"]) for detail in self._outputs)

    @property
    def output_dtypes(self) -> tuple[np.dtype, ...]:
        return tuple(np.dtype(detail["dtype"]) for detail in self._outputs)

    @property
    def output_dtype(self) -> np.dtype:
        """The dtype of the first (for most files the only) output."""
        return self.output_dtypes[0]

    @property
    def dynamic_batch(self) -> bool:
        signature = self._input.get("shape_signature")
        return signature is not None and len(signature) > 0 and int(signature[0]) == -1

    def run_raw_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """One invoke on tensors exactly as the file declares them (int8 stays int8); every
        output, in the file's order."""
        x = np.asarray(x)
        if x.dtype != self.input_dtype:
            raise DataError(
                f"{self.path.name}: input must be {self.input_dtype}, got {x.dtype} "
                "(use run() / run_outputs() to quantize float input)"
            )
        self._check_shape(x)
        if tuple(x.shape) != self.input_shape:
            if not self.dynamic_batch:
                raise ShapeError(
                    f"{self.path.name}: run_raw takes exactly {self.input_shape}, got {x.shape}"
                )
            self._interpreter.resize_tensor_input(self._input["index"], list(x.shape))
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
            self._outputs = self._interpreter.get_output_details()
        self._interpreter.set_tensor(self._input["index"], np.ascontiguousarray(x))
        self._interpreter.invoke()
        return [self._interpreter.get_tensor(d["index"]).copy() for d in self._outputs]

    def run_raw(self, x: np.ndarray) -> np.ndarray:
        """`run_raw_outputs` of a single-output file: its one output tensor."""
        self._require_single_output("run_raw", "run_raw_outputs")
        return self.run_raw_outputs(x)[0]

    def run_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """Float in, any batch size; every output in the file's order: quantized outputs
        dequantized to float32, integer outputs without a scale as their integer arrays."""
        x = np.asarray(x, dtype=np.float32)
        self._check_shape(x)
        if not np.isfinite(x).all():
            raise DataError(f"{self.path.name}: input holds NaN or inf")
        if self.input_dtype != np.float32:
            scale, zero_point = self._input["quantization"]
            x = quantize(x, scale, zero_point, self.input_dtype)
        if self.dynamic_batch or len(x) == self._batch:
            chunks = [self.run_raw_outputs(x)]
        else:
            if len(x) % self._batch:
                raise ShapeError(
                    f"{self.path.name}: batch {len(x)} is not a multiple of the model's "
                    f"fixed batch {self._batch}"
                )
            chunks = [
                self.run_raw_outputs(x[i : i + self._batch]) for i in range(0, len(x), self._batch)
            ]
        results = []
        for position, detail in enumerate(self._outputs):
            y = np.concatenate([chunk[position] for chunk in chunks], axis=0)
            scale, zero_point = detail["quantization"]
            if y.dtype != np.float32 and scale:
                y = dequantize(y, scale, zero_point)
            results.append(y)
        return results

    def run(self, x: np.ndarray) -> np.ndarray:
        """`run_outputs` of a single-output file: float in, its one output (float, or integer
        levels for an integer output without a scale)."""
        self._require_single_output("run", "run_outputs")
        return self.run_outputs(x)[0]

    def _require_single_output(self, method: str, instead: str) -> None:
        if len(self._outputs) != 1:
            raise DataError(
                f"{self.path.name} has {len(self._outputs)} outputs "
                f"({', '.join(self.output_names)}); {method}() returns one, use {instead}()"
            )

    def _check_shape(self, x: np.ndarray) -> None:
        expected = self.input_shape[1:]
        if x.ndim != len(self.input_shape) or tuple(x.shape[1:]) != expected:
            raise ShapeError(
                f"{self.path.name}: input must be (N, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )


def infer_layout(model: LiteRTModel) -> str:
    """'nchw' or 'nhwc' from the declared input shape of a CSI encoder."""
    shape = model.input_shape[1:]
    if shape == CSI_NCHW:
        return "nchw"
    if shape == CSI_NHWC:
        return "nhwc"
    raise ShapeError(
        f"{model.path.name}: input shape {model.input_shape} is neither (N, 2, 32, 32) "
        "nor (N, 32, 32, 2)"
    )


def encode_csi(
    model: LiteRTModel | str | os.PathLike[str],
    csi: np.ndarray,
    *,
    layout: str | None = None,
    num_threads: int = 1,
) -> np.ndarray:
    """Float codewords (N, M) of NCHW CSI (N, 2, 32, 32), whatever the file's layout and I/O.

    This is the LiteRT side of the numerics gate: its output compares directly with the torch
    encoder's and feeds the float decoder. `layout` defaults to what the input shape says. The
    file must have one output; an integer one comes back as its levels in float32. For a file
    with several outputs use `encode_csi_outputs`.
    """
    runner = _runner(model, num_threads)
    runner._require_single_output("encode_csi", "encode_csi_outputs")
    (codewords,) = encode_csi_outputs(runner, csi, layout=layout)
    return codewords.astype(np.float32, copy=False)


def encode_csi_outputs(
    model: LiteRTModel | str | os.PathLike[str],
    csi: np.ndarray,
    *,
    layout: str | None = None,
    num_threads: int = 1,
) -> list[np.ndarray]:
    """Every output (N, M_k) of NCHW CSI (N, 2, 32, 32), in the file's output order.

    Quantized outputs are dequantized to float32; integer outputs without a scale (codeword
    levels, sign bits) keep their integer dtype. `layout` defaults to what the input shape says.
    """
    runner = _runner(model, num_threads)
    csi = np.asarray(csi, dtype=np.float32)
    if csi.ndim != 4 or tuple(csi.shape[1:]) != CSI_NCHW:
        raise ShapeError(f"csi: expected shape (N, 2, 32, 32), got {tuple(csi.shape)}")
    layout = layout or infer_layout(runner)
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    if layout == "nhwc":
        csi = np.ascontiguousarray(csi.transpose(0, 2, 3, 1))
    return [y.reshape(len(csi), -1) for y in runner.run_outputs(csi)]


def _runner(model: LiteRTModel | str | os.PathLike[str], num_threads: int) -> LiteRTModel:
    return model if isinstance(model, LiteRTModel) else LiteRTModel(model, num_threads)


def litert_latency(
    path: str | os.PathLike[str],
    input_shape: Sequence[int] | None = None,
    runs: int = 200,
    *,
    warmup: int = 20,
    threads: int = 1,
    runtimes: Sequence[str] = DEFAULT_RUNTIMES,
) -> LatencyResult:
    """p50 / p90 of one batch-1 call (set input, invoke, read every output) on XNNPACK.

    The input is random data in the file's own dtype, so an int8 file is timed without the
    float conversion a caller may add. `input_shape` (without batch) is only checked against
    the file: an NHWC file accepts the NCHW CSI shape, as both hold the same elements.
    """
    from csideploy.export.latency import LatencyResult

    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
    model = LiteRTModel(path, threads, runtimes=runtimes)
    shape = model.input_shape
    if input_shape is not None and int(np.prod(input_shape)) != int(np.prod(shape[1:])):
        raise ShapeError(f"{model.path.name}: input is {shape}, not (1, {tuple(input_shape)})")
    rng = np.random.default_rng(0)
    if model.input_dtype == np.float32:
        x = rng.random(shape, dtype=np.float32)
    else:
        info = np.iinfo(model.input_dtype)
        x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(model.input_dtype)
    for _ in range(warmup):
        model.run_raw_outputs(x)
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        model.run_raw_outputs(x)
        times[i] = (time.perf_counter_ns() - start) / 1e3
    version = _runtime_version(model.runtime)
    return LatencyResult(
        runtime=f"{model.runtime} {version}".strip(),
        threads=threads,
        batch=shape[0],
        runs=runs,
        warmup=warmup,
        p50_us=round(float(np.percentile(times, 50)), 1),
        p90_us=round(float(np.percentile(times, 90)), 1),
        min_us=round(float(times.min()), 1),
    )


def _runtime_version(package: str) -> str:
    from importlib import metadata

    distribution = package.replace("_", "-")
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""
