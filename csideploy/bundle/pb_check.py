"""The ONNX test-data form of the golden vectors (`<artifact>.test/test_data_set_0/*.pb`).

Tools such as `onnx_test_runner` replay these files without reading the manifest, so they are
held to the same standard as the `.npy` form: exactly one input and one file per output,
named as the file's tensors, the input equal to `inputs.npy`, each output within the
tolerance of what the artifact computes now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from csideploy.bundle.checks import Check
from csideploy.errors import BundleError

DATA_SET = "test_data_set_0"


def check_onnx_test_data(
    root: Path,
    artifact: dict[str, Any],
    inputs: np.ndarray,
    parts: list[np.ndarray],
    tolerance: float,
) -> Check:
    """One check line for the whole `.test` folder of an ONNX artifact."""
    rel = artifact["golden"]["onnx_test_dir"]
    try:
        error = _compare(root / rel, artifact, inputs, parts)
    except BundleError as problem:
        return Check(rel, "golden", False, str(problem))
    verdict = "within" if error <= tolerance else "exceeds"
    return Check(
        rel, "golden", error <= tolerance, f".pb max-abs {error:.3g} {verdict} {tolerance:g}"
    )


def _compare(
    folder: Path, artifact: dict[str, Any], inputs: np.ndarray, parts: list[np.ndarray]
) -> float:
    declared = artifact.get("outputs") or [artifact["output"]]
    wanted = {f"{DATA_SET}/input_0.pb", *(f"{DATA_SET}/output_{k}.pb" for k in range(len(parts)))}
    if folder.is_symlink() or not folder.is_dir():
        raise BundleError("not a folder")
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}
    if found != wanted:
        raise BundleError(f"holds {sorted(found)}, expected {sorted(wanted)}")
    name, array = _read_tensor(folder / DATA_SET / "input_0.pb")
    if name != artifact["input"]["name"] or not np.array_equal(array, inputs):
        raise BundleError(f"input_0.pb ({name!r}) is not the golden inputs.npy")
    worst = 0.0
    for k, (spec, part) in enumerate(zip(declared, parts, strict=True)):
        name, array = _read_tensor(folder / DATA_SET / f"output_{k}.pb")
        if name != spec["name"] or array.shape != part.shape:
            raise BundleError(
                f"output_{k}.pb holds {name!r} {array.shape}, expected {spec['name']!r} "
                f"{part.shape}"
            )
        difference = np.abs(array.astype(np.float64) - part.astype(np.float64))
        worst = max(worst, float(np.max(difference)) if difference.size else 0.0)
    return worst


def _read_tensor(path: Path) -> tuple[str, np.ndarray]:
    """A TensorProto held in the file itself (external data, which could name any file on
    this machine, is refused)."""
    from onnx import TensorProto, numpy_helper

    tensor = TensorProto()
    try:
        tensor.ParseFromString(path.read_bytes())
        if tensor.data_location == TensorProto.EXTERNAL:
            raise BundleError(f"{path.name}: points at external data")
        array = numpy_helper.to_array(tensor)
    except BundleError:
        raise
    except Exception as error:  # protobuf and onnx raise many kinds on hostile bytes
        raise BundleError(f"{path.name}: not an ONNX tensor ({type(error).__name__})") from None
    if not np.all(np.isfinite(array.astype(np.float64))):
        raise BundleError(f"{path.name}: holds NaN or inf")
    return tensor.name, array
