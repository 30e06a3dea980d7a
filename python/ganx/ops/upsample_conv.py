"""upsample_conv2d: nearest upsampling followed by a "same" convolution, fused.

Math (scale s, odd kernel k, padding p = k // 2): output row ``oy = s*i + a`` (phase a) of
``conv2d(interpolate(x, s), w, padding=p)`` reads input rows ``i + floor((a + ky - p) / s)``
only, so each of the s*s output phases is a small dense correlation of the *original* x
with a folded kernel whose taps are sums of the original taps. For s = 2, k = 3 every phase
kernel is 2x2: 16 multiply-adds per 2x2 output block instead of 36, and the 4x larger
upsampled tensor is never built. The backward maps the phase-kernel gradients back to the
k x k kernel by the transpose of that folding. A 1x1 kernel (a ResNet shortcut) needs no fold:
nearest upsampling and a 1x1 convolution commute, so the conv runs at the input resolution
(s*s fewer multiply-adds) and the epilogue replicates its result over each s x s block.

The op is ``torch.ops.ganx.upsample_conv2d`` (kernels in csrc/), with a fake kernel for
torch.compile and its autograd formula registered here.
"""
from __future__ import annotations

import contextlib
import numbers
from typing import Dict, Iterator, List, Optional

import torch
from torch._prims_common import suggest_memory_format

from ganx import _ext  # noqa: F401  (registers torch.ops.ganx)
from ganx.ops import _fwad
from ganx.ops._checks import check_device
from ganx.ops.activations import ACTIVATION_TABLE, ACTIVATIONS, check_activation

__all__ = ["upsample_conv2d", "conv_transpose2d_4s2", "ACTIVATIONS", "UPCONV_ALGORITHMS", "set_upconv_algorithm",
           "get_upconv_algorithm", "upconv_algorithm", "upconv_algorithm_choices"]

_MAX_SCALE = 4
# The op overloads themselves (calling them skips the packet's overload resolution) and the
# canonical name of each accepted activation argument (None -> "none").
_UPCONV = torch.ops.ganx.upsample_conv2d.default
_CONVT = torch.ops.ganx.conv_transpose2d_4s2.default
_CANONICAL_ACT = {None: "none", **{name: name for name in ACTIVATIONS}}

# ----------------------------------------------------------------- algorithm choice
# Both ops run as one of four compositions of the vendor's convolution (cuDNN / oneDNN) with
# ganx's glue kernels (csrc/upsample_conv2d.h):
#   "deconv":  s = 2 with 2x2 phase kernels (upsample + 3x3, ConvTranspose2d(4, 2, 1)): one
#              stride-2 transposed conv with the folded 4x4 kernel, then bias + activation;
#   "stacked": the s*s phase kernels as output channels of one stride-1 conv, then one pass
#              that crops, interleaves, adds the bias and activates;
#   "split":   one conv per phase (always available), then the same pass;
#   "replicate": 1x1 kernels only: nearest upsampling commutes with a 1x1 conv, so the conv runs
#              at the input resolution (s*s fewer multiply-adds) and one pass adds the bias,
#              activates and writes each value to its s x s block (backward: the block sums, then
#              the 1x1 conv's backward at the input resolution).
# Which one runs: the static rule (written once, next to its code: rule() in
# csrc/upsample_conv2d.cpp), or, with
# torch.backends.cudnn.benchmark on, the candidates are timed once per (op, direction, shapes,
# dtype, memory format, device) and the fastest is cached (never under
# torch.use_deterministic_algorithms(True); while a CUDA graph is being captured the cached
# choice, nothing timed or recorded). GANX_UPCONV_ALGO or set_upconv_algorithm() forces one.
UPCONV_ALGORITHMS = ("deconv", "stacked", "split", "replicate")


def set_upconv_algorithm(name: Optional[str]) -> None:
    """Forces one algorithm for every later call (None or "auto": the automatic choice)."""
    _ext._C.set_upconv_algorithm("auto" if name is None else name)


def get_upconv_algorithm() -> Optional[str]:
    """The forced algorithm, or None when the choice is automatic."""
    return _ext._C.upconv_algorithm() or None


@contextlib.contextmanager
def upconv_algorithm(name: Optional[str]) -> Iterator[None]:
    """``with upconv_algorithm("stacked"): ...`` forces an algorithm inside the block (tests, benchmarks)."""
    old = get_upconv_algorithm()
    set_upconv_algorithm(name)
    try:
        yield
    finally:
        set_upconv_algorithm(old)


def upconv_algorithm_choices() -> List[Dict[str, str]]:
    """Every choice made so far: ``key`` (op, direction, shapes, dtype, format, device), ``algorithm``,
    ``source`` ("rule", "timed" or "forced")."""
    return list(_ext._C.upconv_algorithm_choices())


def _check_python_args(weight, scale_factor, padding, activation, negative_slope):
    if isinstance(scale_factor, bool) or not isinstance(scale_factor, numbers.Real):
        raise TypeError(f"upsample_conv2d: scale_factor must be an integer, got {type(scale_factor).__name__}")
    if float(scale_factor) != int(scale_factor) or not 1 <= int(scale_factor) <= _MAX_SCALE:
        raise ValueError(f"upsample_conv2d: scale_factor must be an integer in [1, {_MAX_SCALE}], got {scale_factor}")
    act = check_activation("upsample_conv2d", activation)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        dims = f"{weight.dim()}-D" if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"upsample_conv2d: weight must be 4-D (C_out, C_in, kH, kW), got {dims}")
    k = weight.shape[-1]
    if padding is None:
        padding = k // 2
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral):
        raise TypeError(f"upsample_conv2d: padding must be an integer or None, got {padding!r}")
    return int(scale_factor), int(padding), act, float(negative_slope)


def upsample_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    scale_factor: int = 2,
    padding: Optional[int] = None,
    activation: Optional[str] = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """``act(conv2d(interpolate(x, scale_factor, mode="nearest"), weight, bias, padding))``, fused.

    Args:
        x: (N, C_in, H, W), float32/float64 (float16/bfloat16 too on CUDA); contiguous,
            channels_last or any strided view. The output has x's memory format.
        weight: (C_out, C_in, k, k) with k in {1, 3, 5}.
        bias: (C_out,) or None.
        scale_factor: integer nearest-upsampling factor, 1 to 4.
        padding: must be k // 2 ("same"); None means that.
        activation: None or a name in ``ganx.ops.activations.ACTIVATIONS`` (the activation table,
            csrc/activation.h; "gelu" is its tanh form), applied after the bias.
        negative_slope: slope of leaky_relu (>= 0).

    Under ``torch.autocast("cuda")`` the inputs are cast to the autocast dtype, like conv2d (the
    op's Autocast kernel, csrc/autocast.cpp); under CPU autocast it runs in float32. Gradients
    for x, weight and bias (only those needed are computed). Forward-mode AD (torch.func.jvp,
    jacfwd, torch.autograd.forward_ad) carries tangents of x, weight and bias. Double backward and
    forward-over-reverse are not supported (a clear error).
    """
    # The common call (int scale, padding None or int, a known activation, a float slope, a 4-D
    # weight) goes straight to the op, which checks the rest in C++: the wrapper's time is host
    # overhead paid per layer on top of the kernels (benchmarks/bench_host_overhead.py).
    act = _CANONICAL_ACT.get(activation) if activation is None or type(activation) is str else None
    if (act is not None and type(scale_factor) is int and type(negative_slope) is float
            and isinstance(weight, torch.Tensor) and weight.dim() == 4):
        if padding is None:
            padding = weight.shape[-1] // 2
        if type(padding) is int:
            return _upconv(x, weight, bias, scale_factor, padding, act, negative_slope)
    s, p, act, slope = _check_python_args(weight, scale_factor, padding, activation, negative_slope)
    return _upconv(x, weight, bias, s, p, act, slope)


def conv_transpose2d_4s2(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    activation: Optional[str] = None,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """``act(conv_transpose2d(x, weight, bias, stride=2, padding=1))`` for a 4x4 kernel, fused.

    The classic DCGAN generator layer ``nn.ConvTranspose2d(C_in, C_out, 4, 2, 1)``. Output
    row ``2i + a`` reads input rows ``i - 1 + a`` and ``i + a`` with kernel rows
    ``3 - a`` and ``1 - a``: the same phase-decomposed kernels as :func:`upsample_conv2d`
    with scale 2 and a 3x3 kernel, with phase kernels selected (not summed) from the 4x4 one.

    Args:
        x: (N, C_in, H, W); weight: (C_in, C_out, 4, 4) (ConvTranspose2d's layout);
        bias: (C_out,) or None; activation / negative_slope as in :func:`upsample_conv2d`.
    """
    act = _CANONICAL_ACT.get(activation) if activation is None or type(activation) is str else None
    if act is None:
        act = check_activation("conv_transpose2d_4s2", activation)
    return _convt(x, weight, bias, act, negative_slope if type(negative_slope) is float else float(negative_slope))


# ----------------------------------------------------------------- fake kernels (shapes only)

# The real kernels give the output and grad_x the memory format x.suggest_memory_format()
# (csrc/upsample_conv2d.cpp, output_format) and grad_weight a contiguous layout; the fakes say
# the same for every layout (tests/test_upsample_conv.py checks them against each other).
def _out_format(x: torch.Tensor) -> torch.memory_format:
    return suggest_memory_format(x) if x.dim() == 4 else torch.contiguous_format


def _like(t: torch.Tensor, fmt: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=fmt)


def _check_devices(op: str, x: torch.Tensor, **others: Optional[torch.Tensor]) -> None:
    for name, t in others.items():
        check_device(op, name, t, "x", x)


@torch.library.register_fake("ganx::upsample_conv2d")
def _upsample_conv2d_fake(x, weight, bias, scale, padding, activation, negative_slope):
    torch._check(x.dim() == 4, lambda: f"upsample_conv2d: x must be 4-D (N, C_in, H, W), got {x.dim()}-D")
    torch._check(weight.dim() == 4, lambda: "upsample_conv2d: weight must be 4-D (C_out, C_in, kH, kW)")
    torch._check(weight.shape[1] == x.shape[1], lambda: "upsample_conv2d: weight and x channel mismatch")
    _check_devices("upsample_conv2d", x, weight=weight, bias=bias)
    n, _, h, w = x.shape
    return x.new_empty((n, weight.shape[0], h * scale, w * scale)).contiguous(memory_format=_out_format(x))


@torch.library.register_fake("ganx::upsample_conv2d_backward")
def _upsample_conv2d_backward_fake(grad_out, x, weight, out, has_bias, scale, padding, activation,
                                   negative_slope, output_mask):
    _check_devices("upsample_conv2d_backward", x, grad_out=grad_out, weight=weight, out=out)
    gx = _like(x, _out_format(x)) if output_mask[0] else x.new_empty((0,))
    gw = _like(weight) if output_mask[1] else weight.new_empty((0,))
    gb = x.new_empty((weight.shape[0],)) if (output_mask[2] and has_bias) else x.new_empty((0,))
    return gx, gw, gb


@torch.library.register_fake("ganx::conv_transpose2d_4s2")
def _conv_transpose2d_4s2_fake(x, weight, bias, activation, negative_slope):
    torch._check(x.dim() == 4, lambda: f"conv_transpose2d_4s2: x must be 4-D (N, C_in, H, W), got {x.dim()}-D")
    torch._check(weight.dim() == 4, lambda: "conv_transpose2d_4s2: weight must be 4-D (C_in, C_out, 4, 4)")
    torch._check(weight.shape[0] == x.shape[1], lambda: "conv_transpose2d_4s2: weight and x channel mismatch")
    _check_devices("conv_transpose2d_4s2", x, weight=weight, bias=bias)
    n, _, h, w = x.shape
    return x.new_empty((n, weight.shape[1], 2 * h, 2 * w)).contiguous(memory_format=_out_format(x))


@torch.library.register_fake("ganx::conv_transpose2d_4s2_backward")
def _conv_transpose2d_4s2_backward_fake(grad_out, x, weight, out, has_bias, activation, negative_slope, output_mask):
    _check_devices("conv_transpose2d_4s2_backward", x, grad_out=grad_out, weight=weight, out=out)
    gx = _like(x, _out_format(x)) if output_mask[0] else x.new_empty((0,))
    gw = _like(weight) if output_mask[1] else weight.new_empty((0,))
    gb = x.new_empty((weight.shape[1],)) if (output_mask[2] and has_bias) else x.new_empty((0,))
    return gx, gw, gb


@torch.library.register_fake("ganx::activation")
def _activation_fake(x, activation, negative_slope):
    torch._check(x.dim() == 4, lambda: f"activation: x must be 4-D (N, C, H, W), got {x.dim()}-D")
    return _like(x, _out_format(x))


# ----------------------------------------------------------------- autograd
# In C++ (csrc/autograd.cpp, the ops' Autograd kernels): a Python autograd formula would add
# tens of microseconds of host time to every call, more than the whole layer costs at small
# sizes, and a GPU user pays it per layer on top of the kernels.
# Forward mode. The C++ Autograd kernel carries no tangents (torch raises "jvp is not implemented
# for the c++ API of custom Function" when an argument has one: an error, never zeros), so the
# Python wrappers send a call whose arguments carry tangents (inside torch.func.jvp / jacfwd /
# forward_ad.dual_level) through these autograd.Functions: the same op on the primals, the same
# backward, and the jvp rule below. The check costs the wrappers one module-global read.

def _saved_ref(activation, output, pre_activation):
    """What the backward op reads for this activation (the table's ref column): the output, the
    pre-activation (computed by ``pre_activation()``), or nothing."""
    if activation == "none":
        return None
    return pre_activation() if ACTIVATION_TABLE[activation].ref == "x" else output


def _setup_context(ctx, inputs, output):
    x, weight, bias, scale, padding, activation, negative_slope = inputs
    # (this forward-mode path recomputes the pre-activation of "x"-ref activations; the C++
    # autograd of the plain call computes it once, csrc/autograd.cpp)
    ref = _saved_ref(activation, output, lambda: _UPCONV(x, weight, bias, scale, padding, "none", negative_slope))
    ctx.save_for_backward(x, weight, ref)
    ctx.has_bias = bias is not None
    ctx.args = (scale, padding, activation, negative_slope)
    return ref


def _backward(ctx, grad_out):
    x, weight, out = ctx.saved_tensors
    if torch.is_grad_enabled() and any(t.requires_grad for t in (grad_out, x, weight)):
        raise RuntimeError("upsample_conv2d: double backward (create_graph=True) is not supported")
    scale, padding, activation, negative_slope = ctx.args
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    if out is None:
        out = grad_out.new_empty((0,))
    gx, gw, gb = torch.ops.ganx.upsample_conv2d_backward(
        grad_out, x, weight, out, ctx.has_bias, scale, padding, activation, negative_slope, mask)
    return (gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None,
            None, None, None, None)


# Forward mode (jvp rule, derivation): out = act(pre), pre = L(x, w) + b with L the bilinear
# upsample-conv (activation "none", no bias), so d pre = L(dx, w) + L(x, dw) + db (each term an
# upsample_conv2d itself) and d out = act'(pre) d pre, with act' written with what the backward
# reads (csrc/activation.h act_backward): for the table's ref "y" the output y -- relu [y > 0],
# leaky_relu [y > 0] + slope [y <= 0], tanh 1 - y^2 --, for ref "x" the pre-activation, through
# the activation's derivative in ganx/ops/reference.py (ACTIVATION_DERIVATIVES).
def _act_jvp(t: torch.Tensor, out: torch.Tensor, activation: str, negative_slope: float) -> torch.Tensor:
    a = ACTIVATION_TABLE[activation]
    if a.ref == "x":
        return t * a.derivative(out, negative_slope)
    if activation == "relu":
        return torch.where(out > 0, t, torch.zeros((), dtype=t.dtype, device=t.device))
    if activation == "leaky_relu":
        return torch.where(out > 0, t, t * negative_slope)
    if activation == "tanh":
        return t * (1 - out * out)
    return t


_fwad.register_not_forward_differentiable("ganx::upsample_conv2d_backward")


def _setup_context_ct(ctx, inputs, output):
    x, weight, bias, activation, negative_slope = inputs
    ref = _saved_ref(activation, output, lambda: _CONVT(x, weight, bias, "none", negative_slope))
    ctx.save_for_backward(x, weight, ref)
    ctx.has_bias = bias is not None
    ctx.args = (activation, negative_slope)
    return ref


def _backward_ct(ctx, grad_out):
    x, weight, out = ctx.saved_tensors
    if torch.is_grad_enabled() and any(t.requires_grad for t in (grad_out, x, weight)):
        raise RuntimeError("conv_transpose2d_4s2: double backward (create_graph=True) is not supported")
    activation, negative_slope = ctx.args
    mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
    if out is None:
        out = grad_out.new_empty((0,))
    gx, gw, gb = torch.ops.ganx.conv_transpose2d_4s2_backward(
        grad_out, x, weight, out, ctx.has_bias, activation, negative_slope, mask)
    return gx if mask[0] else None, gw if mask[1] else None, gb if mask[2] else None, None, None


_fwad.register_not_forward_differentiable("ganx::conv_transpose2d_4s2_backward")


def _tangent(x, w, tx, tw, tb, out, activation, negative_slope, linear):
    t = None
    if tx is not None:
        t = linear(tx, w)
    if tw is not None:
        term = linear(x, tw)
        t = term if t is None else t + term
    if tb is not None:
        tb = tb.view(1, -1, 1, 1)
        t = tb.expand(out.shape) if t is None else t + tb
    return _act_jvp(t, out, activation, negative_slope)


class _UpsampleConv2dFwAD(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, scale, padding, activation, negative_slope):
        return _UPCONV(x, weight, bias, scale, padding, activation, negative_slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ref = _setup_context(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], output if ref is None else ref)

    @staticmethod
    def backward(ctx, grad_out):
        if _fwad.dual_level_active():
            raise _fwad.forward_over_reverse_error("upsample_conv2d")
        return _backward(ctx, grad_out)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        x, w, out = ctx.saved_tensors
        scale, padding, activation, slope = ctx.args
        linear = lambda a, b: _upconv(a, b, None, scale, padding, "none", slope)  # noqa: E731
        return _tangent(x, w, tx, tw, tb, out, activation, slope, linear)


class _ConvTranspose2d4s2FwAD(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, activation, negative_slope):
        return _CONVT(x, weight, bias, activation, negative_slope)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ref = _setup_context_ct(ctx, inputs, output)
        ctx.save_for_forward(inputs[0], inputs[1], output if ref is None else ref)

    @staticmethod
    def backward(ctx, grad_out):
        if _fwad.dual_level_active():
            raise _fwad.forward_over_reverse_error("conv_transpose2d_4s2")
        return _backward_ct(ctx, grad_out)

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        x, w, out = ctx.saved_tensors
        activation, slope = ctx.args
        linear = lambda a, b: _convt(a, b, None, "none", slope)  # noqa: E731
        return _tangent(x, w, tx, tw, tb, out, activation, slope, linear)


def _has_tangent(*tensors) -> bool:
    return any(t is not None and _fwad.fwAD.unpack_dual(t).tangent is not None for t in tensors)


def _upconv(x, weight, bias, scale, padding, activation, negative_slope):
    if _fwad.dual_level_active() and _has_tangent(x, weight, bias):
        return _UpsampleConv2dFwAD.apply(x, weight, bias, scale, padding, activation, negative_slope)
    return _UPCONV(x, weight, bias, scale, padding, activation, negative_slope)


def _convt(x, weight, bias, activation, negative_slope):
    if _fwad.dual_level_active() and _has_tangent(x, weight, bias):
        return _ConvTranspose2d4s2FwAD.apply(x, weight, bias, activation, negative_slope)
    return _CONVT(x, weight, bias, activation, negative_slope)
