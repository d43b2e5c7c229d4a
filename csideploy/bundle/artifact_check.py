"""One UE artifact against what the manifest declares about it, and its golden vectors.

A manifest is a claim; the file is the fact. `verify` reads from the file itself its input
and output names, dtypes and shapes, the int8 scale and zero point the runtime will apply,
the codeword length and (single-output encoders) the compression ratio, and, for ONNX, the
model facts the exporter stamps into the file's metadata. Golden vectors are compared in
every form the bundle ships (`.npy` and the ONNX test-data `.pb` files), within a tolerance
the manifest cannot loosen past a bound set by the artifact's own kind.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from csideploy import runner
from csideploy.bundle.checks import Check
from csideploy.bundle.execute import RUNTIMES, open_artifact, run_model_outputs
from csideploy.bundle.golden import GOLDEN_DIR, load_npy
from csideploy.bundle.manifest import MANIFEST_NAME
from csideploy.bundle.pb_check import check_onnx_test_data
from csideploy.errors import BundleError

INTEGER_LEVELS = 2.0
"""Outputs that are integer levels (no scale in the file): two levels at most."""
FP32_MAX_TOLERANCE = 1e-3
"""A float file is re-run on another CPU: ten times the exporter's 1e-4 at most."""
QUANTIZED_SHARE = 0.02
"""Quantized float outputs: 2% of the largest expected |output| (or two output steps)."""
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "pte": ".pte"}


def check_artifact(
    root: Path, manifest: dict[str, Any], artifact: dict[str, Any], hashes_ok: bool
) -> list[Check]:
    """Contract and golden checks of one artifact (nothing is run unless the hashes match).

    A manifest that points an artifact or its golden vectors at the wrong kind of file
    cannot be checked at all: BundleError (one error line, exit 2), not a report line.
    """
    name = artifact["file"]
    problems = _path_problems(manifest, artifact)
    if problems:
        raise BundleError(f"{MANIFEST_NAME}: artifact {name!r}: " + "; ".join(problems))
    if not hashes_ok:
        return [Check(name, "golden", False, "not run: the bundle's hashes do not match")]
    path = root / name
    try:
        problems = _onnx_metadata_problems(path, manifest, artifact)
        model = open_artifact(RUNTIMES[artifact["format"]], path)
    except runner.Skip as reason:
        return [Check(name, "contract", False, f"cannot load: {reason}")]
    except Exception as error:  # a hostile file can make a runtime raise anything
        return [Check(name, "contract", False, f"cannot load: {_one_line(error)}")]
    problems += _interface_problems(manifest, artifact, model)
    detail = "; ".join(problems) or "names, dtypes, shapes, scale / zero point, codeword match"
    return [Check(name, "contract", not problems, detail), *_golden_checks(root, artifact, model)]


def _one_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _path_problems(manifest: dict[str, Any], artifact: dict[str, Any]) -> list[str]:
    """The artifact and its golden files must be hashed files of the right kind."""
    listed = {entry["path"] for entry in manifest["files"]}
    problems = []
    name, fmt = artifact["file"], artifact["format"]
    if not name.endswith(SUFFIXES[fmt]):
        problems.append(f"format {fmt!r} needs a {SUFFIXES[fmt]} file")
    if artifact.get("runtime") != RUNTIMES[fmt]:
        problems.append(f"runtime {artifact.get('runtime')!r}: {fmt} files run on {RUNTIMES[fmt]}")
    if name not in listed:
        problems.append("not a hashed file of the bundle (not under 'files')")
    golden = artifact["golden"]
    for key in ("inputs", "outputs"):
        rel = golden[key]
        if not (rel.startswith(f"{GOLDEN_DIR}/") and rel.endswith(".npy") and rel in listed):
            problems.append(f"golden {key} {rel!r} is not a hashed {GOLDEN_DIR}/*.npy file")
    test_dir = golden.get("onnx_test_dir")
    if test_dir is not None and (fmt != "onnx" or not test_dir.startswith(f"{GOLDEN_DIR}/")):
        problems.append(f"onnx_test_dir {test_dir!r} must be under {GOLDEN_DIR}/ (ONNX only)")
    return problems


def _onnx_metadata_problems(
    path: Path, manifest: dict[str, Any], artifact: dict[str, Any]
) -> list[str]:
    """ONNX files carry the exporter's facts: they must agree with the manifest. A file that
    points at external weight data is refused before any runtime opens it."""
    if artifact["format"] != "onnx":
        return []
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        raise BundleError("the file points at external weight data; a bundle file must not")
    model = manifest["model"]
    declared = {
        "model": model["name"],
        "cr": str(model["cr"]),
        "codeword_length": str(model["codeword_length"]),
        "precision": artifact["precision"],
        "checkpoint_sha256": model["checkpoint"]["sha256"],
        "input_name": artifact["input"]["name"],
    }
    stamped = {p.key: p.value for p in proto.metadata_props}
    return [
        f"{key} {value!r}, the file says {stamped[key]!r}"
        for key, value in declared.items()
        if key in stamped and stamped[key] != value
    ]


def _interface_problems(
    manifest: dict[str, Any], artifact: dict[str, Any], model: Any
) -> list[str]:
    """Declared inputs, outputs, codeword length and CR against the opened file."""
    problems = []
    if len(model.inputs) != 1:
        problems.append(f"the file has {len(model.inputs)} inputs, the manifest declares 1")
    else:
        problems += _tensor_problems("input", artifact["input"], model.inputs[0], _dynamic(model))
    declared = artifact.get("outputs") or [artifact["output"]]
    if declared[0] != artifact["output"]:
        problems.append("'output' differs from the first of 'outputs'")
    found = {spec["name"]: spec for spec in model.outputs}
    if len(model.outputs) != len(declared):
        problems.append(
            f"the file has outputs {list(found)}, the manifest declares {len(declared)}"
        )
    for spec in declared:
        if spec["name"] not in found:
            problems.append(f"output {spec['name']!r} is not in the file (it has {list(found)})")
        else:
            problems += _tensor_problems("output", spec, found[spec["name"]], _dynamic(model, True))
    return problems + _codeword_problems(manifest, model)


def _dynamic(model: Any, outputs: bool = False) -> dict[str, bool]:
    """Whether each tensor's batch dimension is dynamic in the file (runner specs fill it)."""
    if isinstance(model, runner.OrtModel):
        args = model.session.get_outputs() if outputs else model.session.get_inputs()
        return {
            a.name: not (a.shape and isinstance(a.shape[0], int) and a.shape[0] > 0) for a in args
        }
    if not hasattr(model, "interpreter"):
        return {}  # an ExecuTorch program has a fixed batch
    interpreter = model.interpreter
    details = interpreter.get_output_details() if outputs else interpreter.get_input_details()
    return {
        d["name"]: len(d.get("shape_signature", [])) > 0 and int(d["shape_signature"][0]) == -1
        for d in details
    }


def _tensor_problems(
    kind: str, declared: dict[str, Any], actual: dict[str, Any], dynamic: dict[str, bool]
) -> list[str]:
    label = f"{kind} {declared['name']!r}"
    problems = [
        f"{label} {key} {declared.get(key)!r}, the file's is {actual[key]!r}"
        for key in ("name", "dtype")
        if declared.get(key) != actual[key]
    ]
    shape, found = list(declared["shape"]), list(actual["shape"])
    batch_dynamic = dynamic.get(actual["name"], False)
    batch_ok = (
        (not batch_dynamic and shape[:1] == found[:1])
        if shape and isinstance(shape[0], int)
        else batch_dynamic
    )
    if len(shape) != len(found) or shape[1:] != found[1:] or not batch_ok:
        shown = ["N" if batch_dynamic else found[0], *found[1:]] if found else found
        problems.append(f"{label} shape {shape}, the file's is {shown}")
    scale, file_scale = declared.get("scale"), actual["scale"]
    if (scale is None) != (file_scale is None) or (
        scale is not None and not math.isclose(scale, file_scale, rel_tol=1e-6)
    ):
        problems.append(f"{label} scale {scale!r}, the file's is {file_scale!r}")
    if declared.get("zero_point") != actual["zero_point"]:
        problems.append(
            f"{label} zero_point {declared.get('zero_point')!r}, the file's is "
            f"{actual['zero_point']!r}"
        )
    return problems


def _codeword_problems(manifest: dict[str, Any], model: Any) -> list[str]:
    """codeword_length is what the file's outputs hold; CR follows for a one-output encoder."""
    length, cr = manifest["model"]["codeword_length"], manifest["model"]["cr"]
    held = sum(math.prod(spec["shape"][1:]) for spec in model.outputs)
    problems = []
    if held != length:
        problems.append(f"codeword_length {length}, the file's outputs hold {held} values")
    if len(model.outputs) == 1 and model.inputs:
        values = math.prod(model.inputs[0]["shape"][1:])
        if held * cr != values:
            problems.append(
                f"CR 1/{cr}: a {held}-value codeword of a {values}-value input is "
                f"CR 1/{values // max(held, 1)}"
            )
    return problems


def _golden_checks(root: Path, artifact: dict[str, Any], model: Any) -> list[Check]:
    """Run the golden inputs; compare with the .npy and (ONNX) the .pb expected outputs."""
    name, golden = artifact["file"], artifact["golden"]
    inputs = _load_float(root, golden["inputs"])
    expected = _load_float(root, golden["outputs"])
    try:
        _check_range(inputs, artifact["input"], golden["inputs"])
        declared = artifact.get("outputs") or [artifact["output"]]
        parts = run_model_outputs(model, inputs, [o["name"] for o in declared], root / name)
    except (BundleError, runner.Skip) as error:
        return [Check(name, "golden", False, str(error))]
    except Exception as error:  # a hostile file can make a runtime raise anything
        return [Check(name, "golden", False, f"the runtime failed: {_one_line(error)}")]
    outputs = np.concatenate([y.reshape(len(y), -1) for y in parts], axis=1)
    if outputs.shape != expected.shape:
        return [Check(name, "golden", False, f"output shape {outputs.shape} != {expected.shape}")]
    tolerance = float(artifact["tolerance"]["max_abs"])
    bound = tolerance_bound(artifact, model.outputs, expected)
    if tolerance > bound * (1 + 1e-6):
        detail = f"tolerance {tolerance:g} is looser than this artifact allows ({bound:g})"
        return [Check(name, "golden", False, detail)]
    error = float(np.max(np.abs(outputs.astype(np.float64) - expected)))
    verdict = "within" if error <= tolerance else "exceeds"
    checks = [
        Check(name, "golden", error <= tolerance, f"max-abs {error:.3g} {verdict} {tolerance:g}")
    ]
    if "onnx_test_dir" in golden:
        checks.append(check_onnx_test_data(root, artifact, inputs, parts, tolerance))
    return checks


def _load_float(root: Path, rel: str) -> np.ndarray:
    """A golden array; BundleError (the bundle cannot be checked) for anything else."""
    try:
        array = load_npy(root / rel)
    except BundleError as error:
        raise BundleError(f"{rel}: {str(error).split(': ', 1)[-1]}") from None
    if array.dtype != np.float32 or array.ndim < 2 or not np.all(np.isfinite(array)):
        raise BundleError(
            f"{rel}: golden vectors are finite float32 (N, ...), got {array.dtype} {array.shape}"
        )
    return array


def _check_range(inputs: np.ndarray, declared: dict[str, Any], rel: str) -> None:
    """The declared input range must hold the golden inputs the bundle ships."""
    low, high = declared.get("value_range") or (-np.inf, np.inf)
    if inputs.size and (float(inputs.min()) < low or float(inputs.max()) > high):
        raise BundleError(
            f"{rel} spans [{inputs.min():.3g}, {inputs.max():.3g}], outside the declared "
            f"input value_range [{low:g}, {high:g}]"
        )


def tolerance_bound(
    artifact: dict[str, Any], outputs: list[dict[str, Any]], expected: np.ndarray
) -> float:
    """The loosest tolerance this artifact may declare, from its kind and its own outputs."""
    if any(_is_integer(o["dtype"]) and o["scale"] is None for o in outputs):
        return INTEGER_LEVELS
    if artifact["precision"] == "fp32":
        return FP32_MAX_TOLERANCE
    steps = 2.0 * max((o["scale"] for o in outputs if o["scale"]), default=0.0)
    share = QUANTIZED_SHARE * float(np.max(np.abs(expected))) if expected.size else 0.0
    return max(steps, share, 1e-6)


def _is_integer(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind in "iub"
    except TypeError:
        return False
