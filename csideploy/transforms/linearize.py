"""Turn kernel-1 1-D convolutions back into the fully connected layers they are.

CLNet writes its FC compression as `Conv1d(2048, M, kernel_size=1)` on a (N, 2048, 1) tensor
and its expansion as `ConvTranspose1d(M, 2048, 1)`. Exported, they are Conv / ConvTranspose
nodes, which INT8 tooling treats as convolutions: ONNX Runtime's dynamic quantisation of
MatMul/Gemm only (the fast choice on CPUs) skips them, and they would stay float. As `Linear`
layers they export as Gemm/MatMul and quantise like any FC layer. The function is unchanged.

    report = linearize_pointwise_convs(model.encoder)   # a copy; the input is untouched
    report.module, report.replaced
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


class PointwiseLinear(nn.Linear):
    """A Linear layer applied over the channel axis of (N, C, L): a kernel-1 Conv1d.

    Its weight is (out, in) under the same state-dict key as the convolution it replaces.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3 and x.shape[-1] == 1:
            return super().forward(x[..., 0]).unsqueeze(-1)
        return super().forward(x.transpose(1, -1)).transpose(1, -1)


@dataclass(frozen=True)
class LinearizeReport:
    """The copy with pointwise 1-D convolutions as `PointwiseLinear`, and their paths."""

    module: nn.Module
    replaced: tuple[str, ...]


def _pointwise(conv: nn.Module) -> bool:
    if isinstance(conv, nn.Conv1d):
        plain = conv.padding == (0,) and conv.padding_mode == "zeros"
    elif isinstance(conv, nn.ConvTranspose1d):
        plain = conv.padding == (0,) and conv.output_padding == (0,)
    else:
        return False
    return (
        plain
        and conv.kernel_size == (1,)
        and conv.stride == (1,)
        and conv.dilation == (1,)
        and conv.groups == 1
    )


def _as_linear(conv: nn.Conv1d | nn.ConvTranspose1d) -> PointwiseLinear:
    weight = conv.weight.detach()[..., 0]
    if isinstance(conv, nn.ConvTranspose1d):  # stored (in, out, 1)
        weight = weight.t()
    out_features, in_features = weight.shape
    linear = PointwiseLinear(
        in_features,
        out_features,
        bias=conv.bias is not None,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        if conv.bias is not None:
            linear.bias.copy_(conv.bias.detach())
    linear.train(conv.training)
    return linear


def linearize_pointwise_convs(module: nn.Module) -> LinearizeReport:
    """A copy of `module` with every kernel-1, stride-1, ungrouped Conv1d / ConvTranspose1d
    replaced by the equivalent `PointwiseLinear`."""
    new = copy.deepcopy(module)
    replaced = []
    for name, sub in list(new.named_modules()):
        if name and _pointwise(sub):
            new.set_submodule(name, _as_linear(sub))  # type: ignore[arg-type]
            replaced.append(name)
    return LinearizeReport(module=new, replaced=tuple(replaced))
