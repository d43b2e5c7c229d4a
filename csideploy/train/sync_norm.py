"""BatchNorm over the global batch of a distributed run, on any device and backend.

In training mode a BatchNorm normalises with the statistics of its batch, so W processes
that each see 1/W of a global batch would compute W different, noisier statistics and train
a different model than one process with the whole batch. `nn.SyncBatchNorm` fixes that on
GPUs only: in torch 2.13 its forward raises `ValueError` for CPU tensors, so gloo runs cannot
use it. `GlobalBatchNorm` does the same job with two differentiable all-reduces (the sum, then
the sum of squared deviations from the global mean, both accumulated in float64 as the CPU
kernel accumulates them), so its output, gradients and running statistics equal those of one
BatchNorm over the whole global batch up to floating-point rounding, on every process.

`swap_norms` replaces a model's BatchNorms in place by `GlobalBatchNorm`s that share their
parameters and buffers (so an optimizer built on the model keeps working) and returns a
function that puts the originals back; the state-dict keys never change.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class _Sum(torch.autograd.Function):
    """All-reduce (sum) with its gradient: the sum over ranks of the upstream gradients, since
    every rank's loss depends on every rank's share of the statistics."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the batch summed over all processes.

    Outside training, or without an initialised process group, it is a plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise with global batch statistics in training mode, running ones otherwise."""
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        wide = torch.float64
        count = torch.tensor(input.numel() // input.shape[1], dtype=wide, device=input.device)
        dist.all_reduce(count)
        mean = _Sum.apply(input.sum(dims, dtype=wide)) / count
        centered = input.to(wide) - mean.view(shape)
        var = _Sum.apply(centered.square().sum(dims)) / count
        out = (centered * torch.rsqrt(var + self.eps).view(shape)).to(input.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running(mean.detach().to(input.dtype), var.detach(), count)
        return out

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        """Running statistics as BatchNorm keeps them (unbiased variance, momentum or the
        cumulative average when momentum is None)."""
        assert self.num_batches_tracked is not None  # track_running_stats gives every buffer
        assert self.running_mean is not None and self.running_var is not None
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
            unbiased = (var * count / (count - 1).clamp(min=1)).to(self.running_var.dtype)
            self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
            self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


def swap_norms(model: nn.Module) -> Callable[[], None]:
    """Replace every BatchNorm of `model` by a `GlobalBatchNorm` sharing its tensors.

    Returns the function that restores the original modules (which by then hold the trained
    values, since the tensors are shared).
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BatchNorm) and not isinstance(child, GlobalBatchNorm):
                parent.add_module(name, _global_twin(child))
                swapped.append((parent, name, child))

    def restore() -> None:
        for parent, name, child in swapped:
            parent.add_module(name, child)

    return restore


def _global_twin(norm: _BatchNorm) -> GlobalBatchNorm:
    """A `GlobalBatchNorm` with the same settings, parameters and buffers as `norm`."""
    twin = GlobalBatchNorm(
        norm.num_features,
        eps=norm.eps,
        momentum=norm.momentum,
        affine=norm.affine,
        track_running_stats=norm.track_running_stats,
    )
    twin.weight, twin.bias = norm.weight, norm.bias
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        twin.register_buffer(key, getattr(norm, key))
    twin.train(norm.training)
    return twin
