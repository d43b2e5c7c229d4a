"""The original CsiNet Keras weights (`model_CsiNet_indoor_dim128.h5`, Keras 2.0.9) as tensors.

The file is read with h5py alone: no Keras, no pickle, nothing in it runs. Its layout is
Keras' HDF5 weight format (the `save_weights` docstring of keras/engine/topology.py, Keras 2.x;
`model.save` puts the same tree under `model_weights`): a `layer_names` attribute, one group
per layer with a `weight_names` attribute, one dataset per weight named after it
(`conv2d_1/kernel:0`).

CsiNet as its authors built it has, in creation order, 8
`conv2d_*` layers (encoder conv, three per RefineNet, output conv), 7 `batch_normalization_*`
layers and 2 `dense_*` layers (encoder, decoder); layers are matched to the model by kind and
the number in their name. Weight layouts, from Keras' layer code and docs:

- Conv2D kernel (kh, kw, in, out) (`kernel_shape = kernel_size + (input_channels, filters)` in
  Keras' convolution `build`); torch wants (out, in, kh, kw). Both correlate, no flip.
- Dense kernel (in, out) (Keras Dense docs: `output = dot(input, kernel) + bias`); torch
  wants (out, in).
- BatchNormalization: gamma, beta, moving_mean, moving_variance, one per feature of its axis;
  with the default axis=-1 on channels_first tensors that is the 32 delay columns, eps 1e-3,
  as `blocks.DelayBatchNorm` is built.
- CsiNet flattens with `Reshape((2048,))` on the channels_first (N, 2, 32, 32) tensor, which
  keeps the tensor's C order (channel, angle, delay), the order of torch's `flatten(1)`; no
  permutation of the Dense weights is needed.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import torch

from csideploy.errors import CheckpointError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
CSI_SIZE = 2048
MAX_DATASET_ELEMENTS = 2**24
"""Largest weight array read from an .h5 file (CsiNet's biggest is 2048 x 512)."""
_CONVS = (
    "encoder.conv_bn.conv",
    *(f"decoder.refine{r}.body.{i}.conv" for r in (1, 2) for i in (0, 2, 4)),
    "decoder.conv",
)
_BATCH_NORMS = (
    "encoder.conv_bn.bn.bn",
    *(f"decoder.refine{r}.body.{i}.bn.bn" for r in (1, 2) for i in (0, 2, 4)),
)
_DENSES = ("encoder.fc", "decoder.fc")
_KINDS = {"conv2d": _CONVS, "batch_normalization": _BATCH_NORMS, "dense": _DENSES}
_BN_WEIGHTS = {
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}


def is_hdf5(data: bytes) -> bool:
    """Whether a file's bytes start with the HDF5 signature."""
    return data[:8] == HDF5_SIGNATURE


def read_csinet_h5(data: bytes, *, label: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """CsiNet tensors under the project's keys, and what the file says of itself."""
    try:
        import h5py
    except ImportError:
        raise CheckpointError(
            f"{label} is a Keras .h5 file; reading it needs h5py (pip install 'csideploy[hdf5]')"
        ) from None
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            root = h5.get("model_weights", h5)
            info = {
                k: _text(root.attrs[k]) for k in ("keras_version", "backend") if k in root.attrs
            }
            layers = _layers_by_kind(root, label)
            tensors: dict[str, torch.Tensor] = {}
            origin: dict[str, str] = {}
            for kind, keys in _KINDS.items():
                for key, name in zip(keys, layers[kind], strict=True):
                    found = _layer_tensors(root[name], kind, key, f"{label}: {name}")
                    tensors.update(found)
                    origin.update(dict.fromkeys(found, name))
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        raise CheckpointError(f"cannot read {label} as a Keras .h5 file: {error}") from None
    _check_shapes(tensors, origin, label)
    return tensors, info


def _check_shapes(tensors: dict[str, torch.Tensor], origin: dict[str, str], label: str) -> None:
    """Every weight shaped as CsiNet at the CR its encoder Dense reveals, else which is not."""
    from csideploy.models.registry import build, get_entry

    width = int(tensors["encoder.fc.weight"].shape[0])
    cr = CSI_SIZE // width if width and CSI_SIZE % width == 0 else 0
    if cr not in get_entry("csinet").crs:
        raise CheckpointError(
            f"{label}: {origin['encoder.fc.weight']} maps 2048 values to {width}, which is no "
            f"CsiNet CR ({', '.join(f'1/{c}' for c in get_entry('csinet').crs)})"
        )
    expected = {k: tuple(v.shape) for k, v in build("csinet", cr).state_dict().items()}
    for key, value in tensors.items():
        if tuple(value.shape) != expected[key]:
            raise CheckpointError(
                f"{label}: {origin[key]} gives {key} shape {tuple(value.shape)} (after the Keras "
                f"to torch transpose); CsiNet CR 1/{cr} needs {expected[key]}"
            )


def _layers_by_kind(root: Any, label: str) -> dict[str, list[str]]:
    """Weight-holding layer groups by kind, in creation order (the number in their name)."""
    found: dict[str, list[tuple[int, str]]] = {kind: [] for kind in _KINDS}
    for name in root:
        match = re.fullmatch(r"(conv2d|batch_normalization|dense)(?:_(\d+))?", name)
        if match and len(_weight_names(root[name])) > 0:
            found[match[1]].append((int(match[2] or 0), name))
    out = {kind: [name for _, name in sorted(items)] for kind, items in found.items()}
    for kind, keys in _KINDS.items():
        if len(out[kind]) != len(keys):
            raise CheckpointError(
                f"{label}: not CsiNet's Keras layout: {len(out[kind])} {kind}_* weight groups "
                f"({', '.join(out[kind]) or 'none'}), CsiNet has {len(keys)}"
            )
    return out


def _layer_tensors(group: Any, kind: str, key: str, where: str) -> dict[str, torch.Tensor]:
    """One Keras layer's weights as torch tensors under the model's keys."""
    weights = {_short_name(n): _dataset(group, n, where) for n in _weight_names(group)}
    if kind == "batch_normalization":
        out = {
            f"{key}.{ours}": _need(weights, keras, where, 1) for keras, ours in _BN_WEIGHTS.items()
        }
        out[f"{key}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        return {k: torch.as_tensor(v) for k, v in out.items()}
    kernel = _need(weights, "kernel", where, 4 if kind == "conv2d" else 2)
    bias = _need(weights, "bias", where, 1)
    order = (3, 2, 0, 1) if kind == "conv2d" else (1, 0)
    return {
        f"{key}.weight": torch.from_numpy(np.ascontiguousarray(kernel.transpose(order))),
        f"{key}.bias": torch.from_numpy(bias),
    }


def _weight_names(group: Any) -> list[str]:
    names = group.attrs.get("weight_names")
    return [] if names is None else [_text(n) for n in np.atleast_1d(names)]


def _dataset(group: Any, name: str, where: str) -> np.ndarray:
    """A float weight array, its size checked before it is read."""
    import h5py

    dataset = group.get(name)
    if not isinstance(dataset, h5py.Dataset):
        raise CheckpointError(f"{where}: weight {name} is listed but no dataset holds it")
    if dataset.dtype.kind != "f" or dataset.size > MAX_DATASET_ELEMENTS:
        raise CheckpointError(
            f"{where}: weight {name} is {dataset.dtype} of shape {dataset.shape}; expected "
            f"float weights of at most {MAX_DATASET_ELEMENTS} values"
        )
    return np.asarray(dataset[()], dtype=np.float32)


def _need(weights: dict[str, np.ndarray], name: str, where: str, ndim: int) -> np.ndarray:
    value = weights.get(name)
    if value is None:
        raise CheckpointError(
            f"{where}: no {name} weight (found {', '.join(sorted(weights)) or 'none'})"
        )
    if value.ndim != ndim:
        raise CheckpointError(f"{where}: {name} has shape {value.shape}, expected {ndim} axes")
    return value


def _short_name(name: str) -> str:
    """`conv2d_1/kernel:0` -> `kernel`."""
    return name.rsplit("/", 1)[-1].split(":", 1)[0]


def _text(value: Any) -> str:
    return value.decode("utf8", "replace") if isinstance(value, bytes) else str(value)
