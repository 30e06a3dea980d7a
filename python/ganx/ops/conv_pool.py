"""Convolution then 2x2 average pooling, as one stride-2 convolution (the discriminator's mirror
of the generator's upsample-conv).

SNGAN / BigGAN discriminator blocks end in ``avg_pool2d(conv2d(h, w, b, padding=p), 2)``: a
stride-1 convolution at full resolution whose outputs are then averaged in 2x2 blocks. Both are
linear, so the pair is one convolution with stride 2 whose ``(k+1) x (k+1)`` kernel is ``w``
box-filtered::

    W2[s, t] = 1/4 * (w[s, t] + w[s-1, t] + w[s, t-1] + w[s-1, t-1])   (w zero outside 0..k-1)
    avg_pool2d(conv2d(h, w, b, padding=p), 2) == conv2d(h, W2, b, stride=2, padding=p)

Pooled output ``(i, j)`` averages the convolution at rows ``2i, 2i+1`` and columns ``2j, 2j+1``,
which read padded input rows ``2i .. 2i+k`` and columns ``2j .. 2j+k``: exactly the window of the
stride-2 convolution with a ``k+1`` kernel. Its output size ``floor((H + 2p - k - 1) / 2) + 1``
equals the pool's ``floor((H + 2p - k + 1) / 2)`` for every H (odd sizes drop the last row the
same way). The bias passes through (the pool averages four copies of it).

Cost: for a 3x3 kernel, ``16`` multiply-adds per pooled output instead of ``4 * 9 = 36`` (2.25x
fewer), no full-resolution activation is written or read back, and the pool's forward and
backward disappear. The box filter of the weight is ``O(C_out * C_in * k^2)``, done per call so
that a spectrally normalised weight (a parametrization) is filtered after its normalisation.
Gradients reach ``w`` through the filter (autograd of the four pads), ``h`` and ``b`` through
the convolution: every derivative is that of the composition, by construction.

It is plain torch (``conv2d`` and ``pad``), so it runs on every device, dtype, layout, under
autocast, ``torch.compile`` and ``torch.func`` exactly as ``conv2d`` does.
"""
from __future__ import annotations

from typing import Optional

import torch.nn.functional as F
from torch import Tensor

__all__ = ["conv2d_avg_pool2d", "box_filtered_weight"]


def box_filtered_weight(weight: Tensor) -> Tensor:
    """``(C_out, C_in, k, k)`` -> ``(C_out, C_in, k+1, k+1)``: ``weight`` convolved with a 2x2 box
    of ones / 4 (the kernel of ``conv2d(.., stride=2)`` that equals conv then ``avg_pool2d(2)``)."""
    if not isinstance(weight, Tensor) or weight.dim() != 4:
        raise ValueError(f"conv2d_avg_pool2d: weight must be a 4-D tensor (C_out, C_in, kH, kW), got "
                         f"{type(weight).__name__ if not isinstance(weight, Tensor) else tuple(weight.shape)}")
    w = weight * 0.25
    return F.pad(w, (0, 1, 0, 1)) + F.pad(w, (1, 0, 0, 1)) + F.pad(w, (0, 1, 1, 0)) + F.pad(w, (1, 0, 1, 0))


def conv2d_avg_pool2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, padding: int = 0) -> Tensor:
    """``avg_pool2d(conv2d(x, weight, bias, padding=padding), 2)`` computed as one stride-2
    convolution on the box-filtered weight (module docstring: the math and the cost).

    ``x``: (N, C_in, H, W) or (C_in, H, W); ``weight``: (C_out, C_in, kH, kW) (groups 1, dilation 1,
    stride 1 before the pool); ``padding``: an int or an (h, w) pair of ints >= 0. The result has the
    shape, dtype and device of the composition's; it differs from it only by the order of the
    floating-point sums.
    """
    op = "conv2d_avg_pool2d"
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: x must be a Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(f"{op}: x must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape {tuple(x.shape)}")
    w2 = box_filtered_weight(weight)
    if weight.shape[1] != x.shape[-3]:
        raise ValueError(f"{op}: weight has {weight.shape[1]} input channels but x has {x.shape[-3]} "
                         f"(weight {tuple(weight.shape)}, x {tuple(x.shape)})")
    pad = (padding, padding) if isinstance(padding, int) and not isinstance(padding, bool) else padding
    if (not isinstance(pad, (tuple, list)) or len(pad) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pad)):
        raise ValueError(f"{op}: padding must be an int >= 0 or a pair of them, got {padding!r}")
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(f"{op}: bias must be a tensor of shape ({weight.shape[0]},), got "
                         f"{tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__}")
    for d, (size, p, k) in enumerate(zip(x.shape[-2:], pad, weight.shape[-2:])):
        if size + 2 * p - k + 1 < 2:
            raise ValueError(f"{op}: the convolution's output is {size + 2 * p - k + 1} wide along spatial dim "
                             f"{d}, too small for a 2x2 pool (x {tuple(x.shape)}, kernel {tuple(weight.shape[-2:])}, "
                             f"padding {tuple(pad)})")
    return F.conv2d(x, w2, bias, stride=2, padding=tuple(pad))
