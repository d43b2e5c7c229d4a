"""The ONNX layer plan applied to the torch encoder, for the TFLite INT8 file.

The plan names ONNX nodes (`<module path>/<op type>`, the module path as the export wrapper
saw it). `planned_encoder` finds the torch module behind each chosen node, wraps an FC layer
whose input was equalised in `EqualizedLinear` with the same scales, and returns the module
paths the PT2E quantizer annotates; every other layer stays float. Only FC layers are
taken: a convolution annotated alone between float neighbours comes out of the litert-torch
converter as a float CONV_2D (measured on CRNet's conv9x1 block), so in TFLite the plan's
convolutions stay float.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from torch import nn

from csideploy.quantize.equalize import Equalization, EqualizedLinear

_LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def module_path(encoder: nn.Module, node: str) -> str | None:
    """The path inside `encoder` of the layer an ONNX node name points at (a layer, or a
    block holding one, such as a conv with its folded BatchNorm), or None."""
    modules = dict(encoder.named_modules())
    path = node.split("/", 1)[0]
    candidates = [path]
    if "." in path:
        candidates.append(path.split(".", 1)[1])
    for candidate in candidates:
        module = modules.get(candidate)
        if module is not None and any(isinstance(m, _LAYER_TYPES) for m in module.modules()):
            return candidate
    return None


def planned_encoder(
    encoder: nn.Module, nodes: Sequence[str], equalizations: Mapping[str, Equalization]
) -> tuple[nn.Module, tuple[str, ...]]:
    """(a copy of `encoder` with equalised FC inputs, the module paths to quantize)."""
    planned = copy.deepcopy(encoder).eval()
    paths = []
    for node in nodes:
        path = module_path(planned, node)
        if path is None or not isinstance(planned.get_submodule(path), nn.Linear):
            continue
        choice = equalizations.get(node)
        module = planned.get_submodule(path)
        if choice is not None and choice.alpha is not None and isinstance(module, nn.Linear):
            _set_submodule(planned, path, EqualizedLinear(module, choice.scales))
            path = f"{path}.linear"
        paths.append(path)
    return planned, tuple(paths)


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)
