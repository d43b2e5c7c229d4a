"""Fold inference-mode BatchNorm into the convolution that feeds it.

In eval mode BatchNorm is the per-channel affine y = γ (x - μ) / sqrt(σ² + ε) + β; when its
input is a convolution's output, the affine can be moved into the convolution's weights and
bias, which removes one op (and one rounding step after INT8 quantisation) per layer:

    W' = W · s,  b' = (b - μ) · s + β,  with s = γ / sqrt(σ² + ε) per output channel.

Pairs are found by tracing with `torch.fx`: a BatchNorm{1,2,3}d whose only input is a
non-transposed Conv{1,2,3}d of the same dimensionality, the conv's output having no other
user and both modules being called once. The zoo's `ConvBN` blocks are such pairs.

CsiNet's `DelayBatchNorm` normalises the delay axis (the conv's last spatial axis): its affine
varies along the axis the convolution slides over, so it cannot be folded into the conv (nor
into the LeakyReLU + Linear after it). It is converted to `DelayAffine`, the same per-delay-
column multiply-add without the two transposes, and reported as converted, not folded.

Usage:

    folded = fold_batchnorm(model.encoder)             # a folded copy, eval mode
    report = fold_batchnorm_report(model.encoder)      # the same, with what was (not) folded
    report.folded, report.converted, report.not_folded
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from csideploy.models.blocks import ConvBN, DelayBatchNorm

_BN_DIMS: dict[type[nn.Module], int] = {nn.BatchNorm1d: 1, nn.BatchNorm2d: 2, nn.BatchNorm3d: 3}
_CONV_DIMS: dict[type[nn.Module], int] = {nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3}


class DelayAffine(nn.Module):
    """An eval-mode `DelayBatchNorm`: x * scale + shift, one pair per delay column (last axis)."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.reshape(1, 1, 1, -1).clone())
        self.register_buffer("shift", shift.reshape(1, 1, 1, -1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


@dataclass(frozen=True)
class FoldedPair:
    """A convolution and the BatchNorm folded into it (module paths)."""

    conv: str
    bn: str


@dataclass(frozen=True)
class NotFolded:
    """A BatchNorm left in place, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class BatchNormFoldReport:
    """The folded copy (eval mode) and what happened to every BatchNorm."""

    module: nn.Module
    folded: tuple[FoldedPair, ...]
    converted: tuple[str, ...]
    """`DelayBatchNorm` paths turned into `DelayAffine`."""
    not_folded: tuple[NotFolded, ...]
    traced: bool = True
    """False when fx could not trace the module and only structural pairs were folded."""

    @property
    def fully_folded(self) -> bool:
        return not self.not_folded and not self.converted

    def as_dict(self) -> dict[str, Any]:
        return {
            "folded": [f"{p.conv} <- {p.bn}" for p in self.folded],
            "converted": list(self.converted),
            "not_folded": [f"{n.path}: {n.reason}" for n in self.not_folded],
            "traced": self.traced,
        }


def _bn_scale_shift(bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, β - μ s) in float64: the eval-mode affine of `bn`."""
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def fold_conv_bn(conv: _ConvNd, bn: _BatchNorm) -> None:
    """Fold `bn` (eval statistics) into `conv`'s weight and bias, in place."""
    scale, shift = _bn_scale_shift(bn)
    weight = conv.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter((weight * scale.reshape(shape)).to(dtype))
    conv.bias = nn.Parameter((bias * scale + shift).to(dtype))


def _foldable(conv: nn.Module, bn: nn.Module) -> str | None:
    """None when `bn` can be folded into `conv`, else the reason it cannot."""
    if not isinstance(conv, _ConvNd) or type(conv) not in _CONV_DIMS:
        kind = "a transposed convolution" if isinstance(conv, _ConvNd) else type(conv).__name__
        return f"its input comes from {kind}, not a convolution"
    if _CONV_DIMS[type(conv)] != _BN_DIMS.get(type(bn)):
        return f"{type(conv).__name__} and {type(bn).__name__} differ in dimensionality"
    if bn.running_mean is None or bn.running_var is None:
        return "it has no running statistics (track_running_stats=False)"
    if conv.out_channels != bn.num_features:
        return f"conv has {conv.out_channels} output channels, BatchNorm {bn.num_features}"
    return None


def _convert_delay_bn(root: nn.Module) -> list[str]:
    converted = []
    for name, module in list(root.named_modules()):
        if isinstance(module, DelayBatchNorm) and name:
            scale, shift = _bn_scale_shift(module.bn)
            dtype = module.bn.running_mean.dtype
            root.set_submodule(name, DelayAffine(scale.to(dtype), shift.to(dtype)))
            converted.append(name)
    return converted


def _traced_pairs(root: nn.Module) -> tuple[list[tuple[str, str]], list[NotFolded]]:
    graph = fx.symbolic_trace(root).graph
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs, refused = [], []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(root.get_submodule(node.target), _BatchNorm):
            continue
        bn_path = node.target
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source.op != "call_module":
            what = source.target if isinstance(source, fx.Node) else source
            refused.append(NotFolded(bn_path, f"its input is not a convolution ({what})"))
            continue
        reason = _foldable(root.get_submodule(source.target), root.get_submodule(bn_path))
        if reason is None and len(source.users) != 1:
            reason = f"the output of {source.target} is also used elsewhere"
        if reason is None and (calls[source.target] != 1 or calls[bn_path] != 1):
            reason = "the conv or the BatchNorm is called more than once"
        if reason is None:
            pairs.append((source.target, bn_path))
        else:
            refused.append(NotFolded(bn_path, reason))
    return pairs, refused


def _structural_pairs(root: nn.Module) -> list[tuple[str, str]]:
    """Conv -> BN pairs known without tracing: zoo ConvBN blocks and adjacent Sequential items."""
    pairs = []
    for name, module in root.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, ConvBN):
            pairs.append((prefix + "conv", prefix + "bn"))
        elif isinstance(module, nn.Sequential):
            items = list(module.named_children())
            for (a_name, a), (b_name, b) in itertools.pairwise(items):
                if isinstance(b, _BatchNorm) and _foldable(a, b) is None:
                    pairs.append((prefix + a_name, prefix + b_name))
    return pairs


def fold_batchnorm_report(module: nn.Module) -> BatchNormFoldReport:
    """A copy of `module` in eval mode with every Conv -> BatchNorm pair folded (see module doc).

    Folded BatchNorms become `nn.Identity` (their paths stay, with no state); the input is not
    modified. The copy computes the same function as `module.eval()` up to float rounding.
    """
    folded_module = copy.deepcopy(module).eval()
    converted = _convert_delay_bn(folded_module)
    try:
        pairs, refused = _traced_pairs(folded_module)
        traced = True
    except Exception:  # untraceable control flow: fold only the pairs known by structure
        pairs = _structural_pairs(folded_module)
        paired = {bn for _, bn in pairs}
        refused = [
            NotFolded(name, "the module could not be traced with torch.fx")
            for name, m in folded_module.named_modules()
            if isinstance(m, _BatchNorm) and name not in paired
        ]
        traced = False
    for conv_path, bn_path in pairs:
        conv = folded_module.get_submodule(conv_path)
        fold_conv_bn(conv, folded_module.get_submodule(bn_path))  # type: ignore[arg-type]
        folded_module.set_submodule(bn_path, nn.Identity())
    return BatchNormFoldReport(
        module=folded_module,
        folded=tuple(FoldedPair(c, b) for c, b in pairs),
        converted=tuple(converted),
        not_folded=tuple(refused),
        traced=traced,
    )


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy of `module` in eval mode with BatchNorm folded into the preceding convolutions."""
    return fold_batchnorm_report(module).module
