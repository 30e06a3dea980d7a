"""Fused binary cross-entropy losses for GANs (discriminator, generator, drop-in BCE).

Math, on logits l and targets t (never on probabilities, so nothing overflows):
``BCE(l, t) = max(l, 0) - l*t + log1p(exp(-|l|))``, ``d BCE / d l = sigmoid(l) - t``.

* discriminator: ``red(BCE(real, real_target)) + red(BCE(fake, fake_target))``
* generator, non-saturating: ``BCE(fake, target)`` (= ``-log D(G(z))`` for target 1)
* generator, minimax: ``-BCE(fake, 1 - target)`` (= ``log(1 - D(G(z)))`` for target 1)
* bce_with_logits: ``w * [pw * t * softplus(-l) + (1 - t) * softplus(l)]`` (torch's semantics)
* binary_cross_entropy: on probabilities p, ``-w * [t*log(p) + (1-t)*log(1-p)]``, logs clamped
  at -100 (torch's semantics).

Each op (``torch.ops.ganx.*``, kernels in csrc/) reads its inputs once and writes the loss and
``d loss / d input`` in the same pass; the backward only scales that saved gradient by the
incoming one. A term whose coefficient is zero is dropped before multiplying, so the loss is
finite wherever the math is: ``BCE(+inf, 1) = 0`` (eager torch gives NaN there). NaN in gives
NaN out. Reductions follow torch: "mean" of an empty input is NaN, "sum" is 0.

Forward-mode AD (torch.func.jvp / jacfwd, torch.autograd.forward_ad): the tangent of the loss is
the saved gradient dotted with the input's tangent (plus, for the element-wise losses, the target's
tangent times d loss / d target); weight and pos_weight take no tangent (a clear error, as for
their gradients). Double backward (``create_graph=True``) and forward-over-reverse are not
supported: a clear RuntimeError.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple, Union

import torch
from torch import Tensor

from ganx import _ext  # noqa: F401  (registers torch.ops.ganx)
from ganx.ops import _fwad
from ganx.ops._checks import check_device
from ganx.ops.reference import discriminator_stats

__all__ = [
    "DiscriminatorStats",
    "bce_discriminator_loss",
    "bce_generator_loss",
    "bce_with_logits",
    "binary_cross_entropy",
    "REDUCTIONS",
    "GENERATOR_MODES",
    "cpu_buffer_cache_stats",
    "clear_cpu_buffer_cache",
]

REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}
GENERATOR_MODES = {"non_saturating": 0, "minimax": 1}

_ops = torch.ops.ganx
# The overloads themselves: calling them skips the packet's overload resolution (a few us).
_DISC = _ops.bce_discriminator_loss.default
_GEN = _ops.bce_generator_loss.default


class DiscriminatorStats(NamedTuple):
    """What a trainer logs about D, computed in the same pass as the loss.

    Each field is a 0-d float32 tensor on the logits' device (no host sync: call ``float()``
    or ``.item()`` when logging). A logit > 0 counts as "real"; a NaN logit counts as "fake".
    With an empty real (fake) input the real (fake) fields are NaN.
    """

    acc_real: Tensor  # fraction of real logits > 0
    acc_fake: Tensor  # fraction of fake logits <= 0
    d_real: Tensor    # mean sigmoid(real logits) = mean D(x)
    d_fake: Tensor    # mean sigmoid(fake logits) = mean D(G(z))


def cpu_buffer_cache_stats() -> dict:
    """The cache of large CPU output buffers (gradients, per-element losses) of these losses.

    Buffers of 1 MiB and more are kept when their tensor dies and reused by the next call that
    fits in one (the smallest cached block that holds it and is at most twice its size), so a
    training loop does not page-fault its gradient memory in on every step. The tensors are
    ordinary resizable tensors. At most 8 blocks and ``GANX_CPU_BUFFER_CACHE_MB`` MiB (a whole
    number in [0, 1048576], default 512; 0 turns the cache off), oldest evicted first.
    Returns ``{"blocks", "bytes", "limit_bytes", "hits", "misses"}``.
    """
    return dict(_ext._C.cpu_buffer_cache_stats())


def clear_cpu_buffer_cache() -> None:
    """Frees every buffer the CPU output-buffer cache holds (tensors in use are not affected)."""
    _ext._C.cpu_buffer_cache_clear()


# ----------------------------------------------------------------- argument checks (cheap)

def check_reduction(op: str, reduction) -> int:
    """The kernels' code of ``reduction``; a ValueError naming ``op`` when it is not one (shared with
    the loss modules of ganx.nn.losses)."""
    code = REDUCTIONS.get(reduction) if isinstance(reduction, str) else None
    if code is None:
        raise ValueError(f"{op}: reduction must be 'none', 'mean' or 'sum', got {reduction!r}")
    return code


# A scalar target's range, closed: the ops check it in C++ (csrc/bce_loss.cpp, check_target_value),
# once per call; check_target is its Python twin for the fake kernels, the loss modules' constructors
# and the training config, so every layer accepts and refuses the same values with the same message.
TARGET_RANGE = (0.0, 1.0)


def check_target(op: str, name: str, value) -> float:
    """``value`` as a float if it is a valid target (a number in [0, 1]); TypeError / ValueError otherwise."""
    value = _target_type(op, name, value)
    lo, hi = TARGET_RANGE
    if not lo <= value <= hi:
        raise ValueError(f"{op}: {name} must be in [0, 1], got {value}")
    return value




def _target_type(op: str, name: str, value) -> float:
    # The public functions check only the type here (a tensor or a bool must not become a float
    # silently); the range is the op's to check.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: {name} must be a float in [0, 1], got {type(value).__name__}")
    return float(value)


def _tensor(op: str, name: str, t) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")


def _no_factor_grad(op: str, name: str, t: Optional[Tensor]) -> None:
    if t is not None and t.requires_grad and torch.is_grad_enabled():
        raise RuntimeError(f"{op}: the loss is not differentiable with respect to {name} (like torch); "
                           f"pass {name}.detach()")


def _double_backward_check(op: str) -> None:
    # Grad mode is on inside a backward only under create_graph=True; the saved gradient is a
    # constant, so a graph built on it would give silently wrong higher-order gradients.
    if torch.is_grad_enabled():
        raise RuntimeError(f"{op}: double backward (create_graph=True) is not supported; use the "
                           f"reference implementation (impl='reference') for higher-order gradients")


def _need_grad_missing(op: str) -> RuntimeError:
    return RuntimeError(f"{op}: backward reached an op called with need_grad=False; call it through "
                        f"ganx.functional so the gradient is produced in the forward pass")


# ----------------------------------------------------------------- public functions

def bce_discriminator_loss(
    real_logits: Tensor,
    fake_logits: Tensor,
    *,
    real_target: float = 1.0,
    fake_target: float = 0.0,
    reduction: str = "mean",
    return_stats: bool = False,
) -> Union[Tensor, Tuple[Tensor, Tensor], Tuple[Union[Tensor, Tuple[Tensor, Tensor]], DiscriminatorStats]]:
    """``BCE(real_logits, real_target) + BCE(fake_logits, fake_target)``, fused.

    Args:
        real_logits, fake_logits: D's logits on real and on generated samples, any shapes and
            sizes (N, N x 1, PatchGAN maps N x 1 x H x W), same dtype and device. float32/64 on
            CPU (float16/bfloat16 too, computed in float32), and all four on CUDA.
        real_target: label of real samples; < 1 is one-sided label smoothing (in [0, 1]).
        fake_target: label of fake samples (in [0, 1]).
        reduction: "mean": mean over real + mean over fake (a scalar); "sum": sum + sum;
            "none": a pair ``(loss_real, loss_fake)`` of per-element losses shaped like the
            inputs (two tensors, because the inputs may differ in shape).
        return_stats: also return a :class:`DiscriminatorStats`.

    Returns ``loss`` or ``(loss, stats)``. One kernel launch, on CUDA as on the CPU, reads both
    inputs once and writes the loss, the gradients and the statistics; backward is a scale of the
    saved gradients.
    """
    op = "bce_discriminator_loss"
    red = check_reduction(op, reduction)
    rt = _target_type(op, "real_target", real_target)
    ft = _target_type(op, "fake_target", fake_target)
    _tensor(op, "real_logits", real_logits)
    _tensor(op, "fake_logits", fake_logits)
    if _fwad.dual_level_active():
        loss, stats = _disc_with_tangents(real_logits, fake_logits, rt, ft, red)
    else:
        need_grad = torch.is_grad_enabled() and (real_logits.requires_grad or fake_logits.requires_grad)
        loss, _, stats = _DISC(real_logits, fake_logits, rt, ft, red, need_grad)
    if red == 0:
        n = real_logits.numel()
        loss = (loss[:n].view(real_logits.shape), loss[n:].view(fake_logits.shape))
    if return_stats:
        return loss, DiscriminatorStats(*stats.unbind(0))
    return loss


def bce_generator_loss(
    fake_logits: Tensor,
    *,
    mode: str = "non_saturating",
    target: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """The generator's adversarial loss on D's logits for generated samples, fused.

    mode "non_saturating" (the usual choice): ``BCE(fake_logits, target)``, = ``-log D(G(z))``
    for target 1. mode "minimax" (the original GAN game): ``-BCE(fake_logits, 1 - target)``, =
    ``log(1 - D(G(z)))`` for target 1 (minimised by G; it saturates when D is confident).
    reduction "mean" | "sum" | "none" as in torch.
    """
    op = "bce_generator_loss"
    code = GENERATOR_MODES.get(mode) if isinstance(mode, str) else None
    if code is None:
        raise ValueError(f"{op}: mode must be 'non_saturating' or 'minimax', got {mode!r}")
    red = check_reduction(op, reduction)
    t = _target_type(op, "target", target)
    _tensor(op, "fake_logits", fake_logits)
    if _fwad.dual_level_active():
        return _gen_with_tangents(fake_logits, code, t, red)
    need_grad = torch.is_grad_enabled() and fake_logits.requires_grad
    return _GEN(fake_logits, code, t, red, need_grad)[0]


# ----------------------------------------------------------------- forward mode (the GAN losses)
# Their autograd kernels are C++ (csrc/autograd.cpp), and a C++ autograd Function can neither carry
# tangents nor run under torch.func. When an input has a tangent, the public functions compute the
# same loss as a composition of the bce_with_logits op, whose Autograd kernel (below) has the jvp
# rule and reverse mode: red(BCE(real, t_r)) + red(BCE(fake, t_f)) for D, BCE(fake, t) or
# -BCE(fake, 1 - t) for G, with the same stable terms (BCE(+-inf, t) is finite where the math is).
# The statistics are computed from the primals and carry no tangent. Only calls with a tangent take
# this path; a raw torch.ops.ganx call with one raises torch's error for C++ Functions.

def _target_like(x: Tensor, value: float) -> Tensor:
    return torch.full(x.shape, value, dtype=x.dtype, device=x.device)


def _disc_with_tangents(real: Tensor, fake: Tensor, rt: float, ft: float, red: int):
    op = "bce_discriminator_loss"
    (r, f), (tr, tf) = _fwad.unpack((real, fake))
    if tr is None and tf is None:
        need_grad = torch.is_grad_enabled() and (real.requires_grad or fake.requires_grad)
        loss, _, stats = _DISC(real, fake, rt, ft, red, need_grad)
        return loss, stats
    _check_fake_logits(op, r, f)
    check_device(op, "fake", f, "real", r)
    check_target(op, "real_target", rt)
    check_target(op, "fake_target", ft)
    with torch.no_grad():
        stats = _reference_stats(r.detach(), f.detach())
    lr = _ops.bce_with_logits(real, _target_like(r, rt), None, None, red, True)[0]
    lf = _ops.bce_with_logits(fake, _target_like(f, ft), None, None, red, True)[0]
    loss = torch.cat([lr.reshape(-1), lf.reshape(-1)]) if red == 0 else lr + lf
    return loss, stats


def _reference_stats(r: Tensor, f: Tensor) -> Tensor:
    return discriminator_stats(r, f).to(torch.float32)


def _gen_with_tangents(fake: Tensor, code: int, t: float, red: int) -> Tensor:
    op = "bce_generator_loss"
    (f,), (tf,) = _fwad.unpack((fake,))
    if tf is None:
        return _GEN(fake, code, t, red, torch.is_grad_enabled() and fake.requires_grad)[0]
    _check_fake_logits(op, f)
    check_target(op, "target", t)
    if code == 0:  # non-saturating: BCE(fake, t)
        return _ops.bce_with_logits(fake, _target_like(f, t), None, None, red, True)[0]
    return -_ops.bce_with_logits(fake, _target_like(f, 1.0 - t), None, None, red, True)[0]  # minimax


def _promote(input: Tensor, target: Tensor) -> Tuple[Tensor, Tensor]:
    # torch computes in the promoted dtype of input and target (float32 input, float64 target
    # -> float64 loss); the kernels want one dtype.
    dt = torch.promote_types(input.dtype, target.dtype)
    if input.dtype != dt and input.is_floating_point():
        input = input.to(dt)
    return input, target.to(dt) if target.dtype != input.dtype else target


def _elementwise_args(op: str, input: Tensor, target: Tensor, weight: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """The checks the element-wise losses share; (input, target) promoted to one dtype."""
    _tensor(op, "input", input)
    _tensor(op, "target", target)
    if target.dtype != input.dtype:
        input, target = _promote(input, target)
    if weight is not None:
        _no_factor_grad(op, "weight", weight)
    return input, target


def bce_with_logits(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, *, reduction: str = "mean",
                    pos_weight: Optional[Tensor] = None) -> Tensor:
    """Fused ``torch.nn.functional.binary_cross_entropy_with_logits`` (same semantics).

    ``loss = weight * [pos_weight * target * softplus(-input) + (1 - target) * softplus(input)]``;
    weight and pos_weight broadcast to input's shape. Gradients flow to input and target (weight
    and pos_weight are not differentiable, as in torch). Differences from eager torch: the loss
    is finite at input = +-inf where the math is (torch returns NaN there).
    """
    op = "bce_with_logits"
    red = check_reduction(op, reduction)
    input, target = _elementwise_args(op, input, target, weight)
    if pos_weight is not None:
        _no_factor_grad(op, "pos_weight", pos_weight)
    need_grad = torch.is_grad_enabled() and input.requires_grad
    return _ops.bce_with_logits(input, target, weight, pos_weight, red, need_grad)[0]


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    *,
    reduction: str = "mean",
) -> Tensor:
    """Fused ``torch.nn.functional.binary_cross_entropy`` on probabilities (same semantics).

    ``loss = -weight * [target * log(input) + (1 - target) * log(1 - input)]`` with both logs
    clamped at -100 (so input in {0, 1} is finite), gradient denominator clamped at 1e-12, like
    torch. An input outside [0, 1] raises on CPU and gives NaN on CUDA (no device sync). Prefer
    :func:`bce_with_logits` on logits: it is exact where this one clamps.
    """
    op = "binary_cross_entropy"
    red = check_reduction(op, reduction)
    input, target = _elementwise_args(op, input, target, weight)
    need_grad = torch.is_grad_enabled() and input.requires_grad
    return _ops.binary_cross_entropy(input, target, weight, red, need_grad)[0]


# ----------------------------------------------------------------- fake kernels (shapes only)

def _grad_like(x: Tensor, need_grad: bool) -> Tensor:
    return x.new_empty(x.shape) if need_grad else x.new_empty((0,))


def _loss_like(x: Tensor, reduction: int) -> Tensor:
    return x.new_empty(x.shape) if reduction == 0 else x.new_empty(())


def _check_fake_logits(op: str, *ts: Tensor) -> None:
    for t in ts:
        torch._check(t.is_floating_point(), lambda: f"{op}: logits must be a floating-point tensor")
    torch._check(all(t.dtype == ts[0].dtype for t in ts), lambda: f"{op}: inputs must have the same dtype")


def _check_fake_reduction(op: str, reduction: int) -> None:
    if reduction not in (0, 1, 2):  # csrc/bce_loss.cpp check_reduction
        raise ValueError(f"{op}: reduction must be 0 (none), 1 (mean) or 2 (sum), got {reduction}")


@torch.library.register_fake("ganx::bce_discriminator_loss")
def _disc_fake(real, fake, real_target, fake_target, reduction, need_grad):
    _check_fake_logits("bce_discriminator_loss", real, fake)
    check_device("bce_discriminator_loss", "fake", fake, "real", real)
    check_target("bce_discriminator_loss", "real_target", real_target)
    check_target("bce_discriminator_loss", "fake_target", fake_target)
    _check_fake_reduction("bce_discriminator_loss", reduction)
    loss = real.new_empty((real.numel() + fake.numel(),)) if reduction == 0 else real.new_empty(())
    stats = real.new_empty((4,), dtype=torch.float32)
    grad = real.new_empty((real.numel() + fake.numel() if need_grad else 0,))
    return loss, grad, stats


@torch.library.register_fake("ganx::bce_generator_loss")
def _gen_fake(fake, mode, target, reduction, need_grad):
    _check_fake_logits("bce_generator_loss", fake)
    check_target("bce_generator_loss", "target", target)
    _check_fake_reduction("bce_generator_loss", reduction)
    return _loss_like(fake, reduction), _grad_like(fake, need_grad)


@torch.library.register_fake("ganx::bce_with_logits")
def _bwl_fake(input, target, weight, pos_weight, reduction, need_grad):
    _check_fake_logits("bce_with_logits", input)
    for name, t in (("target", target), ("weight", weight), ("pos_weight", pos_weight)):
        check_device("bce_with_logits", name, t, "input", input)
    _check_fake_reduction("bce_with_logits", reduction)
    torch._check(target.shape == input.shape, lambda: "bce_with_logits: target must have input's shape")
    return _loss_like(input, reduction), _grad_like(input, need_grad)


@torch.library.register_fake("ganx::binary_cross_entropy")
def _bce_fake(input, target, weight, reduction, need_grad):
    _check_fake_logits("binary_cross_entropy", input)
    for name, t in (("target", target), ("weight", weight)):
        check_device("binary_cross_entropy", name, t, "input", input)
    _check_fake_reduction("binary_cross_entropy", reduction)
    torch._check(target.shape == input.shape, lambda: "binary_cross_entropy: target must have input's shape")
    return _loss_like(input, reduction), _grad_like(input, need_grad)


# ----------------------------------------------------------------- autograd
# Backward (derivation, all ops): loss = red(f(x)) with the kernel's saved g = d red(f) / d x
# (already divided by numel for "mean"), so d L / d x = grad_out * g for a scalar loss, and
# grad_out[i] * g[i] for reduction "none". The extra outputs (saved gradients, stats) are not
# differentiable.

def _scale(g_loss: Tensor, saved: Tensor, reduction: int) -> Tensor:
    if reduction == 0:
        return g_loss.reshape(saved.shape) * saved
    return saved * g_loss


def _bwl_setup(ctx, inputs, output):
    input, target, weight, pos_weight, reduction, need_grad = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1], input if ctx.needs_input_grad[1] else None, weight, pos_weight)
    ctx.reduction, ctx.need_grad = reduction, need_grad


def _input_grad(ctx, op: str, g_loss: Tensor, g: Tensor) -> Optional[Tensor]:
    """The input's gradient: the kernel's saved one, scaled by the incoming gradient."""
    _double_backward_check(op)
    if not ctx.needs_input_grad[0]:
        return None
    if not ctx.need_grad:
        raise _need_grad_missing(op)
    return _scale(g_loss, g, ctx.reduction)


def _target_grad(ctx, g_loss: Tensor, d: Tensor, weight: Optional[Tensor], n: int) -> Tensor:
    """The target's gradient from the unweighted element-wise derivative ``d`` of the loss."""
    if weight is not None:
        d = d * weight
    d = d * (g_loss.reshape(d.shape) if ctx.reduction == 0 else g_loss)
    return d / n if ctx.reduction == 1 else d


def _bwl_backward(ctx, g_loss, _):
    g, input, weight, pos_weight = ctx.saved_tensors
    g_input = _input_grad(ctx, "bce_with_logits", g_loss, g)
    g_target = None
    if ctx.needs_input_grad[1]:
        # d loss / d t = w * [pw * softplus(-x) - softplus(x)] = w * [(pw - 1) * softplus(-x) - x]
        d = -input
        if pos_weight is not None:
            d = d + (pos_weight - 1) * torch.nn.functional.softplus(-input)
        g_target = _target_grad(ctx, g_loss, d, weight, input.numel())
    return g_input, g_target, None, None, None, None


def _bce_setup(ctx, inputs, output):
    input, target, weight, reduction, need_grad = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1], input if ctx.needs_input_grad[1] else None, weight)
    ctx.reduction, ctx.need_grad = reduction, need_grad


def _bce_backward(ctx, g_loss, _):
    g, input, weight = ctx.saved_tensors
    g_input = _input_grad(ctx, "binary_cross_entropy", g_loss, g)
    g_target = None
    if ctx.needs_input_grad[1]:
        # d loss / d t = w * [log(1 - p) - log(p)], unclamped like torch (+-inf at p in {0, 1})
        g_target = _target_grad(ctx, g_loss, torch.log1p(-input) - torch.log(input), weight, input.numel())
    return g_input, g_target, None, None, None


# The discriminator and generator losses have their autograd kernels in C++ (csrc/autograd.cpp):
# on GAN-sized batches the Python autograd.Function layer would cost more than the whole op.
# Forward mode (jvp rules): d loss = red(g_elem * dx) + red(d_t * dt) where the kernel's saved g is
# already red's derivative (d red(f) / d x, divided by numel for "mean"), so its part is sum(g * dx)
# ("none": g * dx), and d_t = d loss / d target is the element-wise form the backward uses
# (_bwl_backward / _bce_backward), reduced like the loss. The op is called with need_grad=True when
# the input has a tangent, so g exists. weight and pos_weight are not differentiable (like torch's
# gradients, and like the reverse mode here): a tangent on them is an error, never dropped.

def _loss_jvp(op: str, call, primals, tangents, d_target):
    input = primals[0]
    tx, tt = tangents[0], tangents[1]
    for i, name in ((2, "weight"), (3, "pos_weight")):
        if i < len(tangents) - 2 and tangents[i] is not None:
            raise RuntimeError(f"{op}: the loss is not differentiable with respect to {name} (like torch); pass "
                               f"{name} without a forward-mode tangent")
    args = list(primals)
    if tx is not None:
        args[-1] = True  # need_grad
    loss, g = call(*args)
    red = args[-2]
    tangent = None
    if tx is not None:
        tangent = _fwad.dot_tangent(g, tx, red)
    if tt is not None:
        d = d_target(input, primals)
        weight = primals[2]
        if weight is not None:
            d = d * weight
        part = _fwad.reduce_tangent(d * tt, red, input.numel())
        tangent = part if tangent is None else tangent + part
    return (loss, g), (tangent, None)


def _bwl_d_target(input, primals):
    pos_weight = primals[3]
    d = -input
    if pos_weight is not None:
        d = d + (pos_weight - 1) * torch.nn.functional.softplus(-input)
    return d


def _bwl_jvp(call, primals, tangents):
    return _loss_jvp("bce_with_logits", call, primals, tangents, _bwl_d_target)


def _bce_jvp(call, primals, tangents):
    return _loss_jvp("binary_cross_entropy", call, primals, tangents,
                     lambda input, _: torch.log1p(-input) - torch.log(input))


_fwad.register_autograd("ganx::bce_with_logits", _bwl_backward, _bwl_setup, _bwl_jvp)
_fwad.register_autograd("ganx::binary_cross_entropy", _bce_backward, _bce_setup, _bce_jvp)
