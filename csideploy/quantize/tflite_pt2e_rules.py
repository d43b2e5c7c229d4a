"""Annotation rules of the CSI PT2E quantizer: which nodes get observers, which stay float.

Each public function edits the annotations of a traced `torch.export` graph in place; the
quantizer in `csideploy.quantize.tflite_pt2e` applies them in order after the base annotator.
"""

from __future__ import annotations

from typing import Any

import torch

_ATEN = torch.ops.aten
_SCALAR_ARITHMETIC = (_ATEN.add.Tensor, _ATEN.sub.Tensor, _ATEN.mul.Tensor, _ATEN.div.Tensor)
_LEVELLING_OPS = (
    *_SCALAR_ARITHMETIC,
    _ATEN.round.default,
    _ATEN.ceil.default,
    _ATEN.floor.default,
    _ATEN.trunc.default,
    _ATEN.clamp.default,
    _ATEN.clamp.Tensor,
    _ATEN.clamp_min.default,
    _ATEN.clamp_max.default,
)
"""Elementwise ops that turn a float activation into integer levels before a cast."""
_CAST_OPS = (_ATEN.to.dtype, _ATEN._to_copy.default, _ATEN.to.dtype_layout)


def _node_dtype(model: torch.fx.GraphModule, node: Any) -> torch.dtype | None:
    """The dtype a graph node produces, when the graph records it (None when unknown)."""
    if not isinstance(node, torch.fx.Node):
        return None
    value = node.meta.get("val")
    if isinstance(value, torch.Tensor):
        return value.dtype
    attribute = _attribute(model, node)
    return attribute.dtype if attribute is not None else None


def _attribute(model: torch.fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor a `get_attr` node reads (a parameter or buffer), else None."""
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    attribute: Any = model
    for part in str(node.target).split("."):
        attribute = getattr(attribute, part, None)
    return attribute if isinstance(attribute, torch.Tensor) else None


def _is_float_node(model: torch.fx.GraphModule, node: Any) -> bool:
    """True unless the node is known to produce a non-float tensor."""
    dtype = _node_dtype(model, node)
    return dtype is None or dtype.is_floating_point


def float_scalars(model: torch.fx.GraphModule) -> None:
    """Make integer scalars float in arithmetic on float tensors (the same value, exactly)."""
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in _SCALAR_ARITHMETIC:
            continue
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node)]
        if not tensors or not all(_is_float_node(model, a) for a in tensors):
            continue
        node.args = tuple(
            float(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in node.args
        )


def share_padding_scales(model: torch.fx.GraphModule, config: Any, annotation_class: type) -> None:
    """Give each wrap-padding `cat` and its slices the padded tensor's own observer."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    for node in model.graph.nodes:
        if node.op != "call_function" or node.target is not _ATEN.cat.default:
            continue
        source = _padding_source(node)
        if source is None or not _is_float_node(model, source):
            continue
        annotation = source.meta.get("quantization_annotation")
        if annotation is None:
            source.meta["quantization_annotation"] = annotation_class(
                output_qspec=config.output_activation, _annotated=True
            )
        elif annotation.output_qspec is None:
            annotation.output_qspec = config.output_activation
        shared = SharedQuantizationSpec(source)
        for part in node.args[0]:
            if part is not source:
                part.meta["quantization_annotation"] = annotation_class(
                    input_qspec_map={source: shared}, output_qspec=shared, _annotated=True
                )
        node.meta["quantization_annotation"] = annotation_class(
            input_qspec_map={part: shared for part in node.args[0]},
            output_qspec=shared,
            _annotated=True,
        )


def _padding_source(cat: Any) -> Any:
    """The tensor a `cat` wrap-pads (it joins the tensor with slices of it), else None."""
    parts = cat.args[0]
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, torch.fx.Node) for p in parts):
        return None
    sources = {
        p.args[0] if p.op == "call_function" and p.target is _ATEN.slice.Tensor else p
        for p in parts
    }
    if len(sources) != 1:
        return None
    (source,) = sources
    if source not in parts or any(len(p.users) != 1 for p in parts if p is not source):
        return None
    return source


def observe_bare_concatenations(
    model: torch.fx.GraphModule, config: Any, annotation_class: type
) -> None:
    """One observer for every other `cat`: its inputs and output share the first input's scale.

    TFLite's CONCATENATION wants one scale on all sides; separate observers make the converter
    insert a rescale per input (and warn about the trivial ones, CLNet's channel pool).
    """
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    for node in model.graph.nodes:
        if node.op != "call_function" or node.target is not _ATEN.cat.default:
            continue
        if "quantization_annotation" in node.meta:
            continue
        parts = [arg for arg in node.args[0] if isinstance(arg, torch.fx.Node)]
        if not parts:
            continue
        shared = SharedQuantizationSpec((parts[0], node))
        node.meta["quantization_annotation"] = annotation_class(
            input_qspec_map={
                part: config.input_activation if k == 0 else shared
                for k, part in enumerate(parts)
            },
            output_qspec=shared,
            _annotated=True,
        )


def share_fixed_outputs(model: torch.fx.GraphModule) -> None:
    """A consumer of a fixed-range output (sigmoid: 1/256 steps over [0, 1]) reads it as is.

    An input observer of its own would quantize the already quantized tensor a second time
    (CLNet's attention: x * sigmoid(...)), which the converter flags as a quantizer feeding a
    quantizer.
    """
    from torchao.quantization.pt2e.quantizer import (
        FixedQParamsQuantizationSpec,
        SharedQuantizationSpec,
    )

    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is None:
            continue
        for source in list(annotation.input_qspec_map):
            produced = getattr(source.meta.get("quantization_annotation"), "output_qspec", None)
            if isinstance(produced, FixedQParamsQuantizationSpec):
                annotation.input_qspec_map[source] = SharedQuantizationSpec(source)


def observe_model_inputs(model: torch.fx.GraphModule, config: Any, annotation_class: type) -> None:
    """An observer on each float input that no annotated consumer observes already."""
    for node in model.graph.nodes:
        if node.op != "placeholder" or not _is_float_node(model, node):
            continue
        if "quantization_annotation" in node.meta:
            continue
        observed = any(
            node in getattr(user.meta.get("quantization_annotation"), "input_qspec_map", {})
            for user in node.users
        )
        if not observed:
            node.meta["quantization_annotation"] = annotation_class(
                output_qspec=config.input_activation, _annotated=True
            )


def leave_levelling_float(model: torch.fx.GraphModule) -> None:
    """Drop the annotations of the levelling chain in front of each float -> integer cast.

    Walking back from the cast through `_LEVELLING_OPS` (scale by a constant, offset, round,
    clamp), as long as each op feeds nothing but the chain: quantizing those to int8 would
    hand the cast int8 activations instead of levels (or levels on a coarser grid).
    """
    for cast in model.graph.nodes:
        if cast.op != "call_function" or cast.target not in _CAST_OPS:
            continue
        dtype = _node_dtype(model, cast)
        if dtype is None or dtype.is_floating_point or dtype == torch.bool:
            continue
        chain = {cast}
        node = cast.args[0] if cast.args else None
        while (
            isinstance(node, torch.fx.Node)
            and node.op == "call_function"
            and node.target in _LEVELLING_OPS
            and _is_float_node(model, node)
            and {user for user in node.users if not _is_assertion(user)} <= chain
        ):
            node.meta.pop("quantization_annotation", None)
            chain.add(node)
            activations = [a for a in node.args if _is_activation(a)]
            node = activations[0] if len(activations) == 1 else None


_FEATURE_MATH_OPS = (
    _ATEN.sqrt.default,
    _ATEN.div.Tensor,
    _ATEN.where.self,
    _ATEN.sign.default,
    _ATEN.atan2.default,
    _ATEN.abs.default,
)
"""Non-linear elementwise ops that mark input feature math (a plain offset or scale does not)."""


def leave_feature_math_float(model: torch.fx.GraphModule) -> None:
    """Drop the annotations of the ops that compute on the input before any learned layer,
    when those include non-linear feature math (`_FEATURE_MATH_OPS`).

    An int8 grid on `csi - 0.5` rounds most entries of sparse CSI to zero, and `re / |H|` of
    rounded values is noise (DualNet-MP lost 1.3 dB NMSE that way). A learned layer is an op
    with a weight (a get_attr tensor of rank >= 2). Encoders whose prefix is only an offset or
    a layout change are left as they are.
    """
    learned, downstream = set(), set()
    for node in model.graph.nodes:
        if node.op != "call_function":
            continue
        if any(_is_weight(model, a) for a in node.all_input_nodes):
            learned.add(node)
        elif any(a in learned or a in downstream for a in node.all_input_nodes):
            downstream.add(node)
    prefix = [
        n
        for n in model.graph.nodes
        if n.op == "call_function" and n not in learned and n not in downstream
    ]
    if not any(n.target in _FEATURE_MATH_OPS for n in prefix):
        return
    for node in prefix:
        node.meta.pop("quantization_annotation", None)


def _is_weight(model: torch.fx.GraphModule, node: Any) -> bool:
    """A parameter-like constant of rank >= 2 (a conv or linear weight)."""
    attribute = _attribute(model, node)
    return attribute is not None and attribute.dim() >= 2


def _is_assertion(node: Any) -> bool:
    """A shape / dtype check `torch.export` inserts; it computes nothing."""
    return node.op == "call_function" and getattr(node.target, "__name__", "").startswith("_assert")


def _is_activation(arg: Any) -> bool:
    """A node computed from the model input (not a constant buffer or parameter)."""
    return isinstance(arg, torch.fx.Node) and arg.op in ("call_function", "placeholder")


def observe_float_only(model: torch.fx.GraphModule) -> None:
    """Strip every observer request on a tensor that is not float."""
    for node in model.graph.nodes:
        annotation = node.meta.get("quantization_annotation")
        if annotation is None:
            continue
        annotation.input_qspec_map = {
            arg: spec
            for arg, spec in annotation.input_qspec_map.items()
            if _is_float_node(model, arg)
        }
        if annotation.output_qspec is not None and not _is_float_node(model, node):
            annotation.output_qspec = None


