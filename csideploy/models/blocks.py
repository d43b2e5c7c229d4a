"""Building blocks shared by the zoo, named so that official checkpoint keys line up."""

from __future__ import annotations

import torch
from torch import nn

LEAKY_SLOPE = 0.3


def _same_padding(kernel_size: tuple[int, int]) -> tuple[int, int]:
    return ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)


class ConvBN(nn.Module):
    """Conv2d without bias and 'same' padding, then BatchNorm2d (keys `conv.*`, `bn.*`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.conv = nn.Conv2d(in_channels, out_channels, k, padding=_same_padding(k), bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5, momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def leaky() -> nn.LeakyReLU:
    """The papers' activation: LeakyReLU with negative slope 0.3."""
    return nn.LeakyReLU(LEAKY_SLOPE)


class _HardSigmoidLeakyGrad(torch.autograd.Function):
    """relu6(x + 3) / 6 whose gradient outside [-3, 3] is small instead of zero."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.nn.functional.relu6(x + 3.0) / 6.0

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        inside = (x > -3.0) & (x < 3.0)
        return grad * torch.where(inside, 1.0 / 6.0, SATURATED_GRADIENT / 6.0)


SATURATED_GRADIENT = 0.01
"""Relative gradient a saturated hard-sigmoid passes back during training."""


class HardSigmoid(nn.Module):
    """relu6(x + 3) / 6, the mobile-friendly sigmoid (CLNet eq. 13).

    The forward pass is exact in every mode. In training mode the gradient outside the linear
    region is `SATURATED_GRADIENT` of the slope instead of zero, so an output that saturates
    early in training (at a fixed position, whatever the input) can come back; a zero gradient
    there leaves it stuck at 0 or 1 for good.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            return _HardSigmoidLeakyGrad.apply(x)
        return torch.nn.functional.relu6(x + 3.0) / 6.0


class CRBlock(nn.Module):
    """CRNet's multi-resolution residual block; `long` picks 1x9/9x1 (CRNet) or 1x3/3x1 (CLNet)."""

    def __init__(self, long: int = 9) -> None:
        super().__init__()
        self.path1 = nn.Sequential()
        self.path1.add_module("conv3x3", ConvBN(2, 7, 3))
        self.path1.add_module("relu1", leaky())
        self.path1.add_module(f"conv1x{long}", ConvBN(7, 7, (1, long)))
        self.path1.add_module("relu2", leaky())
        self.path1.add_module(f"conv{long}x1", ConvBN(7, 7, (long, 1)))
        self.path2 = nn.Sequential()
        self.path2.add_module("conv1x5", ConvBN(2, 7, (1, 5)))
        self.path2.add_module("relu", leaky())
        self.path2.add_module("conv5x1", ConvBN(7, 7, (5, 1)))
        self.conv1x1 = ConvBN(14, 2, 1)
        self.relu = leaky()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = torch.cat((self.path1(x), self.path2(x)), dim=1)
        return self.relu(self.conv1x1(self.relu(merged)) + x)


class EncoderHead(nn.Sequential):
    """CRNet/CLNet `encoder1`: 3x3, 1x9, 9x1 ConvBN (2->2) with LeakyReLU between."""

    def __init__(self) -> None:
        super().__init__()
        self.add_module("conv3x3_bn", ConvBN(2, 2, 3))
        self.add_module("relu1", leaky())
        self.add_module("conv1x9_bn", ConvBN(2, 2, (1, 9)))
        self.add_module("relu2", leaky())
        self.add_module("conv9x1_bn", ConvBN(2, 2, (9, 1)))


class Unflatten(nn.Module):
    """Reshape (N, C*H*W) to (N, C, H, W); kept as a module so graphs stay readable."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)


class DelayBatchNorm(nn.Module):
    """BatchNorm over the last axis (32 delay bins), as Keras' default axis=-1 did."""

    def __init__(self, features: int = 32) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(features, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x.transpose(1, 3)).transpose(1, 3)
