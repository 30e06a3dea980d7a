"""UpsampleConv2d: nn.Upsample(scale_factor, "nearest") + nn.Conv2d(k, padding=k//2) in one op."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ganx.ops import reference
from ganx.ops._checks import check_impl
from ganx.ops.activations import activation_names
from ganx.ops.upsample_conv import ACTIVATIONS, conv_transpose2d_4s2, upsample_conv2d

__all__ = ["UpsampleConv2d", "FusedConvTranspose2d"]


class UpsampleConv2d(nn.Module):
    """Nearest upsampling by ``scale_factor`` then a ``kernel_size`` "same" convolution,
    optionally followed by an activation, computed without building the upsampled tensor.

    Parameters are named, shaped and initialised like ``nn.Conv2d``'s (``weight``:
    (out_channels, in_channels, k, k), ``bias``: (out_channels,)), so the state_dict of the
    Conv2d it replaces loads unchanged. ``impl="reference"`` runs the plain PyTorch
    Upsample + Conv2d instead (for comparison).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        scale_factor: int = 2,
        bias: bool = True,
        activation: Optional[str] = None,
        negative_slope: float = 0.01,
        impl: str = "fused",
        device=None,
        dtype=None,
    ):
        super().__init__()
        if kernel_size not in (1, 3, 5):
            raise ValueError(f"UpsampleConv2d: kernel_size must be 1, 3 or 5, got {kernel_size}")
        if activation not in (None,) + ACTIVATIONS:
            raise ValueError(f"UpsampleConv2d: activation must be one of {activation_names()}, got {activation!r}")
        check_impl("UpsampleConv2d", impl)
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"UpsampleConv2d: channels must be positive, got in={in_channels}, out={out_channels}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.scale_factor = int(scale_factor)
        self.padding = kernel_size // 2
        self.activation = None if activation == "none" else activation
        self.negative_slope = float(negative_slope)
        self.impl = impl
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The same initialisation as nn.Conv2d.reset_parameters.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size * self.kernel_size
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = upsample_conv2d if self.impl == "fused" else reference.upsample_conv2d
        return fn(x, self.weight, self.bias, self.scale_factor, self.padding, self.activation, self.negative_slope)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"scale_factor={self.scale_factor}, bias={self.bias is not None}")
        if self.activation:
            s += f", activation={self.activation!r}"
            if self.activation == "leaky_relu":
                s += f", negative_slope={self.negative_slope}"
        if self.impl != "fused":
            s += f", impl={self.impl!r}"
        return s


class FusedConvTranspose2d(nn.Module):
    """``nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1)`` (the DCGAN
    generator layer), optionally followed by an activation, on ganx's phase-decomposed
    kernels (each output phase reads a 2x2 input patch with a 2x2 slice of the 4x4 kernel).

    Parameters are named, shaped (``weight``: (in_channels, out_channels, 4, 4)) and
    initialised like ``nn.ConvTranspose2d``'s, so its state_dict loads unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, activation: Optional[str] = None,
                 negative_slope: float = 0.01, impl: str = "fused", device=None, dtype=None):
        super().__init__()
        if activation not in (None,) + ACTIVATIONS:
            raise ValueError(f"FusedConvTranspose2d: activation must be one of {activation_names()}, got {activation!r}")
        check_impl("FusedConvTranspose2d", impl)
        factory = {"device": device, "dtype": dtype}
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = None if activation == "none" else activation
        self.negative_slope = float(negative_slope)
        self.impl = impl
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, 4, 4, **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.ConvTranspose2d's initialisation (fan_in computed from weight dim 1 * k * k).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.out_channels * 16
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = conv_transpose2d_4s2 if self.impl == "fused" else reference.conv_transpose2d_4s2
        return fn(x, self.weight, self.bias, self.activation, self.negative_slope)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size=4, stride=2, padding=1, bias={self.bias is not None}"
        if self.activation:
            s += f", activation={self.activation!r}"
        return s
