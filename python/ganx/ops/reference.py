"""Pure-PyTorch oracles of every fused ganx op (imports only torch).

Each function is the definition the fused kernel must reproduce, written the plain way:
tests compare against these, and `impl="reference"` in the modules runs them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["upsample_conv2d", "conv_transpose2d_4s2", "apply_activation"]


def apply_activation(y: torch.Tensor, activation: Optional[str], negative_slope: float = 0.01) -> torch.Tensor:
    if activation in (None, "none"):
        return y
    if activation == "relu":
        return F.relu(y)
    if activation == "leaky_relu":
        return F.leaky_relu(y, negative_slope)
    if activation == "tanh":
        return torch.tanh(y)
    raise ValueError(f"upsample_conv2d: activation must be one of None, 'relu', 'leaky_relu', 'tanh', got {activation!r}")


def upsample_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    scale_factor: int = 2,
    padding: Optional[int] = None,
    activation: Optional[str] = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """act(conv2d(interpolate(x, scale_factor, mode="nearest"), weight, bias, padding))."""
    if padding is None:
        padding = weight.shape[-1] // 2
    up = F.interpolate(x, scale_factor=scale_factor, mode="nearest")
    return apply_activation(F.conv2d(up, weight, bias, padding=padding), activation, negative_slope)


def conv_transpose2d_4s2(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """act(conv_transpose2d(x, weight (C_in, C_out, 4, 4), bias, stride=2, padding=1))."""
    return apply_activation(F.conv_transpose2d(x, weight, bias, stride=2, padding=1), activation, negative_slope)
