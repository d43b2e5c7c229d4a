#!/usr/bin/env python3
"""Standalone latency runner for ONNX, TFLite and ExecuTorch encoder artifacts.

One file that needs only Python 3.8 or newer, numpy and one runtime (onnxruntime,
ai-edge-litert, tflite-runtime as a fallback, or executorch, whose Python runtime also
imports torch), so it can be copied to a phone, an ARM board
or an emulated root and run there as it is::

    python runner.py --artifacts DIR_OR_FILES --runtime auto --threads 1 --batch 1 \\
        --warmup 20 --runs 200 [--inputs golden.npy] [--save-outputs DIR]

It prints one JSON document (schema ``csideploy.perf/1``) on stdout. `csideploy bench` runs this
same file in a subprocess, locally or over ssh, so there is one timing method everywhere.

This module is csideploy's only home of the runtime adapters (`open_model`: ONNX Runtime,
LiteRT, ExecuTorch), of input quantization and output dequantization, and of the timing loop
(`time_calls`, `latency_summary`, `quick_latency`): the export's gates and quick latency, the
golden vectors, `verify` and `bench` all import it. It imports nothing from csideploy and stays
one file, the one module over the project's size limit: bundles ship it unchanged as
``runner.py`` and handset teams run ``python runner.py`` beside the model files, with no
package to install, no ``-m`` and no folder layout to keep. It reads a bundle's
``manifest.json`` by the schema's keys only (`manifest_facts`).

Each (artifact, runtime, threads) is measured in a fresh child process with the thread
variables set before anything is imported, so that its peak RSS belongs to that artifact alone:
load time, first inference, `--warmup` untimed runs, then `--runs` runs each timed with
`time.perf_counter_ns`. A short single-thread micro-benchmark measures the machine's float32
multiply-accumulate peak and memory bandwidth, from which each result gets a latency floor:
``max(MACs / peak, weight bytes / bandwidth)``, a lower bound and not a prediction.

Under qemu-user (no binfmt, so no child processes of the emulated interpreter) use
``--isolation inprocess``; emulation is detected and marked ``"emulated": true``, and its
timings must not be read as latency.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SCHEMA = "csideploy.perf/1"
RUNNER_VERSION = 1
FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".pte": "pte"}
RUNTIMES = ("onnxruntime", "litert", "executorch")
RUNTIME_FORMATS = {"onnxruntime": "onnx", "litert": "tflite", "executorch": "pte"}
LITERT_PACKAGES = ("ai_edge_litert", "tflite_runtime")
ET_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 6: "float32", 11: "bool"}
"""ExecuTorch ScalarType codes of the tensor types an encoder's inputs and outputs use."""
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
COPY_SIZES = tuple(2**k for k in range(16, 27, 2))
"""Copy buffers of 64 KiB, 256 KiB, 1 MiB, 4 MiB, 16 MiB and 64 MiB."""
COPY_VOLUME = 2**25
"""Bytes copied per timing: small buffers are copied many times so each timing is ~ms."""
INT8_PEAK_FACTOR = 4.0
"""An 8-bit SIMD lane is a quarter of a 32-bit one: the compute floor of an INT8 artifact
divides by four times the measured float32 peak, so that it stays a lower bound."""
FLOOR_NOTE = (
    "floor = max(MACs / peak MAC rate, weight bytes / memory bandwidth), from a single-thread "
    "micro-benchmark of the machine that ran the files: a lower bound on latency, not a "
    "prediction"
)
ARM_PARTS = {
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd40": "Neoverse-V1",
    "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd49": "Neoverse-N2",
    "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3",
    "0xd4f": "Neoverse-V2",
}


class BenchInputError(Exception):
    """Bad input to the runner (no artifacts, unreadable inputs): one line, exit code 2."""


class Skip(Exception):
    """A measurement that cannot run here (runtime missing, batch not supported)."""


def latency_summary(timings_ns: Any) -> dict[str, float | int]:
    """Percentiles (numpy, linear interpolation), min, max, mean and std of per-run timings.

    Input is nanoseconds, output is microseconds; `std` is the population deviation (ddof 0).
    """
    import numpy as np

    us = np.asarray(timings_ns, dtype=np.float64) / 1e3
    if us.ndim != 1 or us.size == 0:
        raise ValueError("latency_summary needs a non-empty 1-D sequence of timings")
    p50, p90, p99 = np.percentile(us, [50, 90, 99])
    return {
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p99": round(float(p99), 3),
        "min": round(float(us.min()), 3),
        "max": round(float(us.max()), 3),
        "mean": round(float(us.mean()), 3),
        "std": round(float(us.std()), 3),
        "runs": int(us.size),
    }


def latency_floor(
    macs: int | None,
    weight_bytes: int | None,
    roofline: dict[str, Any] | None,
    *,
    batch: int = 1,
    precision: str | None = None,
) -> dict[str, Any] | None:
    """The roofline floor in microseconds and which term binds, or None if nothing is known.

    The compute term is `batch * macs / peak` (peak x4 for INT8 files, x2 for fp16); the memory
    term is reading the weights once, `weight_bytes / bandwidth` at the best bandwidth measured
    for a buffer of at least that size. Either term may be missing.
    """
    if not roofline:
        return None
    peak = roofline.get("peak_macs_per_s")
    bandwidth = bandwidth_for(weight_bytes, roofline) if weight_bytes else None
    factor = {"int8": INT8_PEAK_FACTOR, "dynamic": INT8_PEAK_FACTOR, "fp16": 2.0}.get(
        precision or "", 1.0
    )
    compute_us = batch * macs / (peak * factor) * 1e6 if macs and peak else None
    memory_us = weight_bytes / bandwidth * 1e6 if weight_bytes and bandwidth else None
    terms = {k: v for k, v in (("compute", compute_us), ("memory", memory_us)) if v is not None}
    if not terms:
        return None
    bound = max(terms, key=lambda k: terms[k])
    return {
        "floor_us": round(terms[bound], 4),
        "bound": bound,
        "compute_us": None if compute_us is None else round(compute_us, 4),
        "memory_us": None if memory_us is None else round(memory_us, 4),
        "peak_factor": factor,
    }


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def _cpuinfo_fields() -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per block (processors; ARM adds a trailing Hardware block)."""
    blocks: list[dict[str, str]] = [{}]
    for line in _read_text("/proc/cpuinfo").splitlines():
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, _, value = line.partition(":")
        blocks[-1].setdefault(key.strip().lower(), value.strip())
    return [b for b in blocks if b]


def cpu_model_name() -> str:
    """A readable CPU name: x86 'model name', an ARM board's Hardware/Model, or the core type."""
    blocks = _cpuinfo_fields()
    for key in ("model name", "hardware", "model", "cpu model", "cpu"):
        for block in blocks:
            value = block.get(key)
            if value and not value.isdigit():
                return value
    parts = sorted(
        {
            ARM_PARTS.get(b["cpu part"].lower(), f"ARM part {b['cpu part']}")
            for b in blocks
            if "cpu part" in b
        }
    )
    if parts:
        return " + ".join(parts)
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.stdout.strip():
                return out.stdout.strip()
        except OSError:
            pass
    return platform.processor() or "unknown"


def detect_emulation() -> str | None:
    """'qemu-user' when this interpreter runs under qemu-user emulation, else None.

    qemu-user rewrites /proc/self/exe to the emulated binary but not /proc/thread-self/exe,
    which still names the qemu binary. CSIDEPLOY_EMULATED (any value but 0) forces the mark.
    """
    declared = os.environ.get("CSIDEPLOY_EMULATED", "").strip()
    try:
        host_exe = os.path.basename(os.readlink("/proc/thread-self/exe"))
    except OSError:
        host_exe = ""
    if host_exe.startswith("qemu-"):
        return "qemu-user"
    if declared not in ("", "0"):
        return "declared" if declared.lower() in ("1", "true", "yes") else declared
    return None


def _package_version(distribution: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(distribution)
    except Exception:  # not installed, or metadata unreadable
        return None


def machine_info(emulated: str | None = None) -> dict[str, Any]:
    """CPU model, core counts, `uname -m`, OS and the Python / numpy / runtime versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    model = cpu_model_name()
    if emulated:
        model = f"{model} (emulated: {emulated}; not a real CPU)"
    uname = platform.uname()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "machine": uname.machine,
        "system": uname.system,
        "release": uname.release,
        "python": platform.python_version(),
        "numpy": _package_version("numpy"),
        "runtimes": {
            name: version
            for name, version in (
                ("onnxruntime", _package_version("onnxruntime")),
                ("ai-edge-litert", _package_version("ai-edge-litert")),
                ("tflite-runtime", _package_version("tflite-runtime")),
                ("executorch", _package_version("executorch")),
            )
            if version
        },
    }


def artifact_role(name: str) -> str:
    """'decoder' for the BS-side graph (file stem starting with 'decoder'), else 'encoder'."""
    return "decoder" if Path(name).name.lower().startswith("decoder") else "encoder"


def discover(paths: list[str], *, include_decoder: bool = False) -> tuple[Path | None, list[Path]]:
    """The artifact root (a directory, or None for loose files) and the model files to time.

    A directory is searched recursively for .onnx and .tflite files (hidden folders skipped);
    decoder files are left out unless `include_decoder`.
    """
    root: Path | None = None
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            root = root or path
            for candidate in sorted(path.rglob("*")):
                relative = candidate.relative_to(path)
                if any(part.startswith(".") for part in relative.parts):
                    continue
                if candidate.is_file() and candidate.suffix.lower() in FORMATS:
                    found.append(candidate)
        elif path.is_file():
            if path.suffix.lower() not in FORMATS:
                raise BenchInputError(f"{path}: not an .onnx, .tflite or .pte file")
            found.append(path)
        else:
            raise BenchInputError(f"{path}: no such file or directory")
    if not include_decoder:
        found = [p for p in found if artifact_role(p.name) != "decoder"]
    if not found:
        where = ", ".join(paths)
        raise BenchInputError(f"no .onnx, .tflite or .pte encoder artifacts found in {where}")
    return root, found


def file_sizes(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {
        "bytes": len(data),
        "gzip_bytes": len(gzip.compress(data, compresslevel=9, mtime=0)),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def manifest_facts(manifest: Any, name: str) -> dict[str, Any]:
    """Precision, model name and CR of one file, read by key from a csideploy manifest.

    The keys are the manifest schema's: `artifacts[].file` / `artifacts[].precision` and
    `model.name` / `model.cr`. A value that is missing or of the wrong type is None: the
    runner reads the manifest it was shipped with, and a file the manifest does not list (the
    BS-side decoder, loose files) has no declared precision.
    """
    facts: dict[str, Any] = {"precision": None, "model": None, "cr": None}
    if not isinstance(manifest, dict):
        return facts
    entries = manifest.get("artifacts")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("file") == name:
            precision = entry.get("precision")
            facts["precision"] = precision if isinstance(precision, str) else None
    model = manifest.get("model")
    if isinstance(model, dict):
        facts["model"] = model.get("name") if isinstance(model.get("name"), str) else None
        cr = model.get("cr")
        facts["cr"] = cr if isinstance(cr, int) and not isinstance(cr, bool) and cr > 0 else None
    return facts


def load_manifest(root: Path | None, explicit: str | None) -> tuple[Any, str | None]:
    """The parsed manifest (or None) and a note when one was found but unreadable."""
    path = Path(explicit) if explicit else (root / "manifest.json" if root else None)
    if path is None or not path.is_file():
        return None, None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return None, f"{path}: unreadable manifest ({error}); precision, model and CR unknown"
    if not isinstance(manifest, dict):
        return None, f"{path}: not a JSON object; precision, model and CR unknown"
    return manifest, None


_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


class OrtModel:
    """An onnxruntime CPU session with `threads` intra-op threads, sequential execution."""

    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int, batch: int) -> None:
        import onnxruntime as ort

        self.version = ort.__version__
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [self._spec(i, batch) for i in self.session.get_inputs()]
        self.outputs = [self._spec(o, batch) for o in self.session.get_outputs()]
        self.names = [o["name"] for o in self.outputs]

    @staticmethod
    def _spec(arg: Any, batch: int) -> dict[str, Any]:
        shape = []
        for position, dim in enumerate(arg.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            elif position == 0:
                shape.append(batch)
            else:
                raise Skip(f"input {arg.name!r} has a dynamic non-batch dimension {dim!r}")
        return {
            "name": arg.name,
            "shape": shape,
            "dtype": _ORT_DTYPES.get(arg.type, arg.type),
            "scale": None,
            "zero_point": None,
        }

    def check_batch(self, batch: int) -> None:
        for spec in self.inputs:
            if spec["shape"] and spec["shape"][0] != batch:
                raise Skip(f"the file has a fixed batch of {spec['shape'][0]}, not {batch}")

    def __call__(self, feeds: list[Any]) -> list[Any]:
        return self.session.run(
            self.names, {spec["name"]: feeds[k] for k, spec in enumerate(self.inputs)}
        )


class LiteRtModel:
    """A LiteRT interpreter (XNNPACK) with `threads` threads; resizes a dynamic batch."""

    runtime = "litert"

    def __init__(self, path: Path, threads: int, batch: int) -> None:
        interpreter_class, package = load_litert()
        self.package = package
        self.version = _package_version(package.replace("_", "-")) or "unknown"
        self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self._resize(batch)
        details = self.interpreter.get_input_details()
        self.input_index = [d["index"] for d in details]
        self.output_index = [d["index"] for d in self.interpreter.get_output_details()]
        self.inputs = [self._spec(d) for d in details]
        self.outputs = [self._spec(d) for d in self.interpreter.get_output_details()]

    def _resize(self, batch: int) -> None:
        details = self.interpreter.get_input_details()
        if all(int(d["shape"][0]) == batch for d in details if len(d["shape"])):
            return
        for d in details:
            signature = d.get("shape_signature")
            if signature is None or len(signature) == 0 or int(signature[0]) != -1:
                raise Skip(f"the file has a fixed batch of {int(d['shape'][0])}, not {batch}")
            self.interpreter.resize_tensor_input(d["index"], [batch, *list(d["shape"][1:])])
        self.interpreter.allocate_tensors()

    @staticmethod
    def _spec(detail: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        scale, zero_point = detail.get("quantization", (0.0, 0))
        quantized = bool(scale) and np.dtype(detail["dtype"]).kind in "iu"
        return {
            "name": detail["name"],
            "shape": [int(d) for d in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "scale": float(scale) if quantized else None,
            "zero_point": int(zero_point) if quantized else None,
        }

    def check_batch(self, batch: int) -> None:
        """Batch handling happens at load time (`_resize`)."""

    def __call__(self, feeds: list[Any]) -> list[Any]:
        for k, index in enumerate(self.input_index):
            self.interpreter.set_tensor(index, feeds[k])
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.output_index]


class EtModel:
    """An ExecuTorch program's `forward` (XNNPACK delegate); tensors are positional.

    ExecuTorch's Python runtime takes and returns torch tensors, so this adapter needs torch
    besides executorch. `threads` resets ExecuTorch's process-wide XNNPACK thread pool.
    """

    runtime = "executorch"

    def __init__(self, path: Path, threads: int, batch: int) -> None:
        import torch
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime

        portable_lib._unsafe_reset_threadpool(threads)
        self.torch = torch
        self.version = _package_version("executorch") or "unknown"
        self.method = Runtime.get().load_program(path).load_method("forward")
        meta = self.method.metadata
        self.inputs = [
            self._spec(meta.input_tensor_meta(k), f"input_{k}") for k in range(meta.num_inputs())
        ]
        self.outputs = [
            self._spec(meta.output_tensor_meta(k), f"output_{k}") for k in range(meta.num_outputs())
        ]

    @staticmethod
    def _spec(meta: Any, name: str) -> dict[str, Any]:
        dtype = ET_DTYPES.get(int(meta.dtype()), f"scalar type {int(meta.dtype())}")
        return {
            "name": name,
            "shape": [int(d) for d in meta.sizes()],
            "dtype": dtype,
            "scale": None,
            "zero_point": None,
        }

    def check_batch(self, batch: int) -> None:
        for spec in self.inputs:
            if spec["shape"] and spec["shape"][0] != batch:
                raise Skip(f"the program has a fixed batch of {spec['shape'][0]}, not {batch}")

    def __call__(self, feeds: list[Any]) -> list[Any]:
        outputs = self.method.execute([self.torch.from_numpy(x) for x in feeds])
        return [y.numpy() for y in outputs]


def load_executorch() -> None:
    """Import ExecuTorch's Python runtime, or Skip with the reason."""
    try:
        import executorch.runtime  # noqa: F401
    except Exception as error:  # a broken install fails in many ways
        raise Skip(f"executorch not importable ({type(error).__name__}: {error})") from error


def load_litert() -> tuple[Any, str]:
    """The Interpreter class of ai-edge-litert, or of tflite-runtime where only that exists."""
    reasons = []
    for package in LITERT_PACKAGES:
        try:
            module = __import__(f"{package}.interpreter", fromlist=["Interpreter"])
            return module.Interpreter, package
        except Exception as error:  # any import failure: try the next package
            reasons.append(f"{package}: {type(error).__name__}: {error}")
    raise Skip("no LiteRT interpreter importable (" + "; ".join(reasons) + ")")


def open_model(
    runtime: str, path: Path, threads: int, batch: int
) -> OrtModel | LiteRtModel | EtModel:
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except Exception as error:  # a broken install fails in many ways
            raise Skip(f"onnxruntime not importable ({type(error).__name__}: {error})") from error
        return OrtModel(path, threads, batch)
    if runtime == "litert":
        return LiteRtModel(path, threads, batch)
    if runtime == "executorch":
        load_executorch()
        return EtModel(path, threads, batch)
    raise Skip(f"unknown runtime {runtime!r}")


def quantize(x: Any, scale: float, zero_point: int, dtype: str) -> Any:
    """Affine quantization as TFLite's QUANTIZE kernel does it (round half away from zero)."""
    import numpy as np

    info = np.iinfo(dtype)
    scaled = np.asarray(x, dtype=np.float32) / np.float32(scale)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: Any, scale: float, zero_point: int) -> Any:
    import numpy as np

    return ((q.astype(np.int32) - zero_point) * np.float32(scale)).astype(np.float32)


def fit_layout(samples: Any, per_sample: list[int], name: str) -> Any:
    """`samples` (N, ...) in the model's per-sample shape, moving channels last if that fits."""
    import numpy as np

    shape = tuple(samples.shape[1:])
    if shape == tuple(per_sample):
        return samples
    if samples.ndim == 4 and (shape[1], shape[2], shape[0]) == tuple(per_sample):
        return np.ascontiguousarray(samples.transpose(0, 2, 3, 1))
    raise Skip(
        f"inputs have per-sample shape {shape}, the file's input {name!r} wants {tuple(per_sample)}"
    )


def to_input_dtype(x: Any, spec: dict[str, Any]) -> Any:
    """Float samples as the file's input tensor: quantized for integer I/O, cast otherwise."""
    import numpy as np

    if spec["scale"] is not None:
        return quantize(x, spec["scale"], spec["zero_point"], spec["dtype"])
    if np.dtype(spec["dtype"]).kind == "f":
        return np.ascontiguousarray(x, dtype=spec["dtype"])
    return np.zeros(x.shape, dtype=spec["dtype"])


def make_feeds(specs: list[dict[str, Any]], golden: Any, seed: int) -> list[Any]:
    """One batch per input: the first rows of `golden` (first input only) or uniform [0, 1)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = []
    for position, spec in enumerate(specs):
        shape = spec["shape"]
        if golden is not None and position == 0:
            samples = fit_layout(golden, shape[1:], spec["name"])
            reps = -(-shape[0] // len(samples))
            x = np.concatenate([samples] * reps)[: shape[0]] if reps > 1 else samples[: shape[0]]
        else:
            x = rng.random(shape, dtype=np.float32)
        feeds.append(to_input_dtype(x, spec))
    return feeds


def as_float_output(y: Any, spec: dict[str, Any]) -> Any:
    import numpy as np

    if spec["scale"] is not None:
        return dequantize(y, spec["scale"], spec["zero_point"])
    return np.asarray(y, dtype=np.float32) if np.asarray(y).dtype.kind == "f" else np.asarray(y)


def run_rows(model: Any, rows: Any) -> list[Any]:
    """Every output of `model` on float `rows` (N, ...), a batch at a time, as the file
    returns it (integer outputs stay integer; `as_float_output` dequantizes).

    The rows are fitted to the file's layout and quantized for integer input; further inputs
    (side information) get the seeded uniform batch of `make_feeds`. The golden vectors,
    `verify`, the export's gates and `--save-outputs` all run files through here.
    """
    import numpy as np

    spec = model.inputs[0]
    batch = spec["shape"][0]
    samples = fit_layout(np.asarray(rows, dtype=np.float32), spec["shape"][1:], spec["name"])
    if len(samples) % batch:
        raise Skip(f"{len(samples)} input rows are not a multiple of the batch {batch}")
    chunks: list[list[Any]] = [[] for _ in model.outputs]
    for start in range(0, len(samples), batch):
        feeds = [to_input_dtype(samples[start : start + batch], spec)]
        feeds += make_feeds(model.inputs[1:], None, 0)
        for k, y in enumerate(model(feeds)):
            chunks[k].append(np.asarray(y).copy())
    return [np.concatenate(chunk) for chunk in chunks]


def save_outputs(model: Any, golden: Any, out_dir: Path, stem: str) -> list[str]:
    """Run every row of `golden` (a batch at a time) and save the outputs as .npy files.

    Writes ``<stem>.npy`` (float; dequantized for integer outputs) per output tensor (suffixed
    ``.<k>`` after the first), and ``<stem>.raw.npy`` with the integer tensor as the file
    returned it.
    """
    import numpy as np

    outputs = run_rows(model, golden)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for k, out_spec in enumerate(model.outputs):
        raw = outputs[k]
        suffix = "" if k == 0 else f".{k}"
        np.save(out_dir / f"{stem}{suffix}.npy", as_float_output(raw, out_spec))
        written.append(f"{stem}{suffix}.npy")
        if out_spec["scale"] is not None:
            np.save(out_dir / f"{stem}{suffix}.raw.npy", raw)
            written.append(f"{stem}{suffix}.raw.npy")
    return written


def output_stem(name: str) -> str:
    """A flat file stem for an artifact's outputs: its relative name with '/' as '__'."""
    return name.replace("\\", "/").replace("/", "__")


def peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def time_calls(call: Any, feeds: Any, warmup: int, runs: int) -> tuple[Any, int, list[int]]:
    """The first call's outputs and time, then `warmup` untimed calls and `runs` timed ones.

    Every timing is one `call(feeds)` between two `time.perf_counter_ns()` readings, in ns.
    """
    started = time.perf_counter_ns()
    outputs = call(feeds)
    first_ns = time.perf_counter_ns() - started
    for _ in range(warmup):
        call(feeds)
    timings = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        call(feeds)
        timings.append(time.perf_counter_ns() - started)
    return outputs, first_ns, timings


QUICK_RUNS = 200
QUICK_WARMUP = 20


@dataclass(frozen=True)
class LatencyResult:
    """A quick latency of one file, in microseconds: what the export records per artifact."""

    runtime: str
    threads: int
    batch: int
    runs: int
    warmup: int
    p50_us: float
    p90_us: float
    min_us: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quick_latency(
    runtime: str,
    path: Path,
    runs: int = QUICK_RUNS,
    *,
    warmup: int = QUICK_WARMUP,
    threads: int = 1,
) -> LatencyResult:
    """p50 / p90 / min of one batch-1 call in this process, with the same adapters, inputs
    (uniform [0, 1), seed 0, quantized for integer I/O) and timing loop as a full measurement.

    A sanity figure for the machine that runs the export; `measure` in a fresh process per
    file is the benchmark.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got {runs}, {warmup}")
    model = open_model(runtime, Path(path), threads, 1)
    model.check_batch(1)
    feeds = make_feeds(model.inputs, None, 0)
    _, _, timings = time_calls(model, feeds, warmup, runs)
    summary = latency_summary(timings)
    package = getattr(model, "package", runtime)
    return LatencyResult(
        runtime=f"{package} {model.version}",
        threads=threads,
        batch=1,
        runs=runs,
        warmup=warmup,
        p50_us=round(float(summary["p50"]), 1),
        p90_us=round(float(summary["p90"]), 1),
        min_us=round(float(summary["min"]), 1),
    )


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one (artifact, runtime, threads): the worker body, in this process.

    `spec` holds path, name, runtime, threads, batch, warmup, runs, seed, inputs (an .npy path
    or None), save_outputs (a folder or None) and keep_timings.
    """
    import numpy as np

    result: dict[str, Any] = {
        "artifact": spec["name"],
        "runtime": spec["runtime"],
        "threads": spec["threads"],
        "batch": spec["batch"],
        "status": "ok",
        "reason": None,
    }
    golden = _load_inputs(spec["inputs"]) if spec.get("inputs") else None
    rss_start = peak_rss_bytes()
    try:
        started = time.perf_counter_ns()
        if spec["runtime"] == "onnxruntime":
            import onnxruntime  # noqa: F401
        elif spec["runtime"] == "executorch":
            load_executorch()
        else:
            load_litert()
        import_ns = time.perf_counter_ns() - started
        rss_imported = peak_rss_bytes()
        started = time.perf_counter_ns()
        model = open_model(spec["runtime"], Path(spec["path"]), spec["threads"], spec["batch"])
        init_ns = time.perf_counter_ns() - started
        model.check_batch(spec["batch"])
        feeds = make_feeds(model.inputs, golden, spec.get("seed", 0))
        outputs, first_ns, timings = time_calls(model, feeds, spec["warmup"], spec["runs"])
    except Skip as reason:
        return {**result, "status": "skipped", "reason": str(reason)}
    rss_end = peak_rss_bytes()
    result.update(
        {
            "runtime_version": getattr(model, "version", None),
            "runtime_package": getattr(model, "package", spec["runtime"]),
            "input": model.inputs,
            "output": model.outputs,
            "output_finite": bool(
                all(np.isfinite(np.asarray(y, dtype=np.float64)).all() for y in outputs)
            ),
            "import_ms": round(import_ns / 1e6, 3),
            "init_ms": round(init_ns / 1e6, 3),
            "first_inference_ms": round(first_ns / 1e6, 3),
            "latency_us": latency_summary(timings) if timings else None,
            "timings_us": (
                [round(t / 1e3, 3) for t in timings] if spec.get("keep_timings", True) else None
            ),
            "rss_start_bytes": rss_start,
            "rss_after_import_bytes": rss_imported,
            "peak_rss_bytes": rss_end,
            "model_rss_bytes": (
                None if rss_end is None or rss_imported is None else rss_end - rss_imported
            ),
        }
    )
    if spec.get("save_outputs") and golden is not None:
        try:
            result["saved_outputs"] = save_outputs(
                model, golden, Path(spec["save_outputs"]), output_stem(spec["name"])
            )
        except Skip as reason:
            result["saved_outputs"] = []
            result["reason"] = f"outputs not saved: {reason}"
    return result


def _load_inputs(path: str) -> Any:
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise BenchInputError(f"{path}: not a readable .npy array ({error})") from error
    if isinstance(data, np.lib.npyio.NpzFile):
        raise BenchInputError(f"{path}: pass a single .npy array, not an .npz archive")
    if data.ndim < 2 or len(data) == 0:
        raise BenchInputError(f"{path}: expected an (N, ...) array, got shape {data.shape}")
    return np.asarray(data, dtype=np.float32)


def roofline_probe(matmul_n: int = 1024, repeats: int = 5) -> dict[str, Any]:
    """Peak float32 MAC rate (best square matmul) and copy bandwidth by buffer size.

    Call it in a process whose BLAS thread variables are 1: the floor is for one thread.
    A copy moves its size twice (read + write), so bandwidth = 2 * bytes / time; small buffers
    are copied many times per timing so that each timing is long enough to trust. Buffers from
    64 KiB (cache) to 64 MiB (main memory): the largest is `bandwidth_bytes_per_s`.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((matmul_n, matmul_n), dtype=np.float32)
    b = rng.random((matmul_n, matmul_n), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best_mm = min(_timed(lambda: np.matmul(a, b, out=c)) for _ in range(repeats))
    by_size = {}
    for size in COPY_SIZES:
        src = np.ones(size // 4, dtype=np.float32)
        dst = np.empty_like(src)
        inner = max(1, COPY_VOLUME // size)

        def copies(src: Any = src, dst: Any = dst, inner: int = inner) -> None:
            for _ in range(inner):
                np.copyto(dst, src)

        copies()
        best = min(_timed(copies) for _ in range(repeats))
        by_size[str(size)] = round(2 * size * inner / best)
    return {
        "peak_macs_per_s": round(matmul_n**3 / best_mm),
        "bandwidth_bytes_per_s": by_size[str(COPY_SIZES[-1])],
        "bandwidth_by_size": by_size,
        "matmul_n": matmul_n,
        "repeats": repeats,
        "threads": 1,
        "method": "numpy float32 matmul (n^3 MACs) and np.copyto (2 x bytes), best of repeats",
        "note": FLOOR_NOTE,
    }


def bandwidth_for(weight_bytes: int, roofline: dict[str, Any]) -> float | None:
    """The highest copy bandwidth measured with a working set at least as large as the weights.

    A copy of S bytes touches 2 S (source and destination). Weights that fit in a cache are
    read at cache speed in a hot loop; taking the best rate over copies whose working set is
    no smaller than the weights keeps the memory term a lower bound.
    """
    by_size = roofline.get("bandwidth_by_size") or {}
    rates = [rate for size, rate in by_size.items() if 2 * int(size) >= weight_bytes and rate]
    if rates:
        return float(max(rates))
    fallback = roofline.get("bandwidth_bytes_per_s")
    return float(fallback) if fallback else None


def _timed(action: Any) -> float:
    started = time.perf_counter_ns()
    action()
    return (time.perf_counter_ns() - started) / 1e9


def _thread_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    return env


def run_json_worker(command: list[str], threads: int, timeout: float) -> dict[str, Any]:
    """Run `command` in a fresh interpreter whose thread variables are `threads`, and return
    the last JSON object it printed; a crash or a timeout becomes an error record."""
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_thread_env(threads),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = " | ".join(done.stderr.strip().splitlines()[-3:])
    return {"status": "error", "reason": f"worker exited with code {done.returncode}: {tail}"}


def _run_worker(payload: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """This file's `--worker` on one measurement, in a fresh interpreter."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(payload)]
    return run_json_worker(command, threads, timeout)


def _dispatch(
    payload: dict[str, Any], threads: int, isolation: str, timeout: float
) -> dict[str, Any]:
    if isolation == "subprocess":
        return _run_worker(payload, threads, timeout)
    try:
        if payload.get("task") == "roofline":
            return roofline_probe()
        return measure(payload)
    except Exception as error:  # one failing file must not stop the others
        return {"status": "error", "reason": f"{type(error).__name__}: {error}"}


def parse_list(text: str, cast: Any = str) -> list[Any]:
    items = [cast(item.strip()) for item in str(text).split(",") if item.strip()]
    if not items:
        raise BenchInputError(f"empty list: {text!r}")
    return items


def select_runtimes(requested: list[str], fmt: str) -> list[str]:
    """The runtimes of `requested` that run files of format `fmt` ('auto' picks by format)."""
    chosen = []
    for runtime in requested:
        if runtime == "auto":
            chosen.extend(r for r, f in RUNTIME_FORMATS.items() if f == fmt)
        elif RUNTIME_FORMATS.get(runtime) == fmt:
            chosen.append(runtime)
    return list(dict.fromkeys(chosen))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every artifact x runtime x threads and return the perf document."""
    runtimes = parse_list(args.runtime)
    unknown = [r for r in runtimes if r not in (*RUNTIMES, "auto", "none")]
    if unknown:
        raise BenchInputError(
            f"unknown runtime {unknown[0]!r}; the runner knows auto, none, " + ", ".join(RUNTIMES)
        )
    threads = parse_list(args.threads, int)
    if min(threads) < 1 or args.batch < 1 or args.runs < 1 or args.warmup < 0:
        raise BenchInputError("threads, batch and runs must be >= 1 and warmup >= 0")
    if args.inputs and not Path(args.inputs).is_file():
        raise BenchInputError(f"{args.inputs}: inputs file not found")
    if args.inputs:
        _load_inputs(args.inputs)
    root, files = discover(args.artifacts, include_decoder=args.include_decoder)
    manifest, manifest_note = load_manifest(root, args.manifest)
    emulated = detect_emulation() or ("declared" if args.emulated else None)
    isolation = args.isolation
    roofline = None
    if not args.no_roofline and not emulated:
        probe = _dispatch({"task": "roofline"}, 1, isolation, args.timeout)
        roofline = probe if "peak_macs_per_s" in probe else None
    artifacts, results = [], []
    for path in files:
        name = _relative_name(path, root)
        role = artifact_role(name)
        facts = manifest_facts(manifest, name)
        entry = {
            "name": name,
            "path": str(path),
            "format": FORMATS[path.suffix.lower()],
            "role": role,
            "precision": facts["precision"],
            **file_sizes(path),
            "params": None,  # not in the manifest; `csideploy bench` counts them
            "macs": None,
            "model": facts["model"],
            "cr": facts["cr"],
        }
        artifacts.append(entry)
        chosen = select_runtimes(runtimes, entry["format"])
        if not chosen:
            if "none" not in runtimes:
                reason = f"no selected runtime runs .{path.suffix[1:]} files"
                results.append(_skipped(name, "-", args, reason))
            continue
        for runtime in chosen:
            for count in threads:
                payload = {
                    "path": str(path),
                    "name": name,
                    "runtime": runtime,
                    "threads": count,
                    "batch": args.batch,
                    "warmup": args.warmup,
                    "runs": args.runs,
                    "seed": args.seed,
                    "inputs": args.inputs,
                    "save_outputs": args.save_outputs if count == threads[0] else None,
                    "keep_timings": not args.no_timings,
                }
                record = _dispatch(payload, count, isolation, args.timeout)
                record = {**_skipped(name, runtime, args, None, count), **record}
                record.update(floor_fields(record, entry, roofline, args.batch))
                results.append(record)
    notes = [manifest_note] if manifest_note else []
    if emulated:
        notes.append("timings were taken under emulation: they are not latency figures")
    return {
        "schema": SCHEMA,
        "runner_version": RUNNER_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "emulated": bool(emulated),
        "emulation": emulated,
        "machine": machine_info(emulated),
        "target": "local",
        "settings": {
            "runtimes": runtimes,
            "threads": threads,
            "batch": args.batch,
            "warmup": args.warmup,
            "runs": args.runs,
            "inputs": Path(args.inputs).name
            if args.inputs
            else "uniform [0, 1), seed " + str(args.seed),
            "isolation": isolation,
            "timer": "time.perf_counter_ns per run",
        },
        "roofline": roofline,
        "artifacts": artifacts,
        "results": results,
        "notes": notes,
    }


def _relative_name(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


def _skipped(
    name: str, runtime: str, args: argparse.Namespace, reason: str | None, threads: int = 0
) -> dict[str, Any]:
    return {
        "artifact": name,
        "runtime": runtime,
        "threads": threads or parse_list(args.threads, int)[0],
        "batch": args.batch,
        "status": "skipped" if reason else "error",
        "reason": reason,
    }


def floor_fields(
    record: dict[str, Any], entry: dict[str, Any], roofline: dict[str, Any] | None, batch: int
) -> dict[str, Any]:
    floor = latency_floor(
        entry["macs"], entry["bytes"], roofline, batch=batch, precision=entry["precision"]
    )
    latency = record.get("latency_us") or {}
    p50 = latency.get("p50")
    return {
        "floor": floor,
        "p50_over_floor": round(p50 / floor["floor_us"], 2) if floor and p50 else None,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runner.py",
        description="Time ONNX / TFLite encoder files; print one csideploy.perf/1 JSON document.",
    )
    parser.add_argument("--artifacts", nargs="+", help="artifact directory and/or model files")
    parser.add_argument(
        "--runtime",
        default="auto",
        help="auto, onnxruntime, litert, executorch or none (comma list)",
    )
    parser.add_argument("--threads", default="1", help="thread counts, comma list (e.g. 1,2,4)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input batch")
    parser.add_argument("--inputs", help="an (N, ...) float .npy array to feed (first rows)")
    parser.add_argument("--save-outputs", help="folder for each artifact's outputs on --inputs")
    parser.add_argument("--manifest", help="manifest.json (default: DIR/manifest.json)")
    parser.add_argument("--include-decoder", action="store_true", help="also time decoder files")
    parser.add_argument("--no-roofline", action="store_true", help="skip the micro-benchmark")
    parser.add_argument("--no-timings", action="store_true", help="leave out per-run timings")
    parser.add_argument(
        "--isolation",
        choices=("subprocess", "inprocess"),
        default="subprocess",
        help="a fresh process per measurement (default) or all in this one (qemu-user)",
    )
    parser.add_argument("--emulated", action="store_true", help="mark the results as emulated")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        payload = json.loads(args.worker)
        if payload.get("task") == "roofline":
            print(json.dumps(roofline_probe()))
        else:
            print(json.dumps(measure(payload)))
        return 0
    if not args.artifacts:
        print("error: --artifacts is required", file=sys.stderr)
        return 2
    if args.isolation == "inprocess":
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, "1")
    try:
        document = run(args)
    except BenchInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
