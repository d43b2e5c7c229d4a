"""Golden vectors: a few inputs and each artifact's expected outputs, as .npy and ONNX .pb.

Layout inside the bundle:

    golden/inputs.npy                                  float32 (K, 2, 32, 32)
    golden/<artifact file>.expected.npy                float32 (K, codeword_length)
    golden/<artifact file>.test/test_data_set_0/input_0.pb, output_<k>.pb   (ONNX artifacts)

A file with several outputs (an integer handset graph) has them flattened and concatenated in
the manifest's `outputs` order in `.expected.npy`, and one `output_<k>.pb` each, in the
file's own dtypes.

The `.test` folder follows the ONNX backend test-data layout, so `onnx_test_runner`-style tools
can replay the vectors (copy the model next to it as `model.onnx`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN_DIR = "golden"
INPUTS_FILE = f"{GOLDEN_DIR}/inputs.npy"


def expected_file(artifact: str) -> str:
    return f"{GOLDEN_DIR}/{artifact}.expected.npy"


def onnx_test_dir(artifact: str) -> str:
    return f"{GOLDEN_DIR}/{artifact}.test"


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        np.save(stream, np.ascontiguousarray(array), allow_pickle=False)


def write_inputs(bundle_dir: Path, inputs: np.ndarray) -> str:
    """Write the golden inputs once; return their bundle-relative path."""
    _save_npy(Path(bundle_dir) / INPUTS_FILE, inputs.astype(np.float32))
    return INPUTS_FILE


def write_expected(
    bundle_dir: Path,
    artifact: str,
    inputs: np.ndarray,
    outputs: Sequence[np.ndarray],
    *,
    input_name: str,
    output_specs: Sequence[Mapping[str, Any]],
) -> dict[str, str]:
    """Write one artifact's expected outputs (one array per output, in `output_specs` order,
    each with `name` and `dtype`); ONNX artifacts also get the .pb test layout."""
    bundle_dir = Path(bundle_dir)
    golden = {"inputs": INPUTS_FILE, "outputs": expected_file(artifact)}
    flat = np.concatenate([np.asarray(y).reshape(len(y), -1) for y in outputs], axis=1)
    _save_npy(bundle_dir / golden["outputs"], flat.astype(np.float32))
    if artifact.endswith(".onnx"):
        from onnx import numpy_helper

        test_dir = bundle_dir / onnx_test_dir(artifact) / "test_data_set_0"
        test_dir.mkdir(parents=True, exist_ok=True)
        tensors = {"input_0.pb": numpy_helper.from_array(inputs.astype(np.float32), input_name)}
        for k, (y, spec) in enumerate(zip(outputs, output_specs, strict=True)):
            typed = np.asarray(y).astype(np.dtype(spec.get("dtype", "float32")))
            tensors[f"output_{k}.pb"] = numpy_helper.from_array(typed, spec["name"])
        for name, tensor in tensors.items():
            (test_dir / name).write_bytes(tensor.SerializeToString(deterministic=True))
        golden["onnx_test_dir"] = onnx_test_dir(artifact)
    return golden


def load_npy(path: Path) -> np.ndarray:
    """Load a golden array without ever unpickling (BundleError for anything but a .npy)."""
    from csideploy.errors import BundleError

    path = Path(path)
    if path.is_symlink() or not path.is_file():
        raise BundleError(f"{path.name}: not a regular file")
    try:
        with open(path, "rb") as stream:
            return np.lib.format.read_array(stream, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:120]
        raise BundleError(f"{path.name}: not a numpy .npy array ({reason})") from None
