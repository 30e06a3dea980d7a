"""Forward-mode AD (``torch.autograd.forward_ad``, ``torch.func.jvp`` / ``jacfwd`` / ``linearize``)
for the ganx ops.

torch.library's ``register_autograd`` gives an op reverse mode only: an argument's forward-mode
tangent is dropped without a word, so ``torch.func.jvp`` returned zeros. The ops whose autograd is
in Python register their Autograd kernel here instead: the reverse-mode kernel torch.library would
build (the same backward and setup_context) plus, when an argument carries a tangent, the op's jvp
rule. The op then runs on the primals (building the reverse-mode graph as usual), and its
differentiable outputs get the tangents the rule computes from ganx and ATen ops, so a tangent is
itself differentiable (nested jvp) and batches under vmap (jacfwd). The cost when no dual level
is active is one module-global read.

Forward-over-reverse (a gradient's own tangent, ``jacfwd(grad(f))`` or a backward inside a dual
level after a forward that carried tangents) is not supported: the saved tensors are the primals,
so the gradient would silently lack its tangent. That raises a RuntimeError naming the op.
"""
from __future__ import annotations

import threading
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, _library
from torch.autograd import forward_ad as fwAD

_lib = torch.library.Library("ganx", "IMPL")  # noqa: TOR901  (registrations only, the ops live in C++)
_state = threading.local()

# jvp(call, primals, tangents) -> (outputs, output_tangents): ``call(*args)`` runs the op with
# reverse-mode autograd; ``primals`` are the op's arguments without tangents, ``tangents`` the
# tangent of each (None where it has none, and for non-tensor arguments).
JvpRule = Callable[[Callable, List, List[Optional[Tensor]]], Tuple[Sequence, Sequence[Optional[Tensor]]]]


def dual_level_active() -> bool:
    """True inside ``forward_ad.dual_level()`` (torch.func.jvp enters one too); cheap."""
    return fwAD._current_level >= 0


def unpack(args: Sequence) -> Tuple[List, List[Optional[Tensor]]]:
    """(primals, tangents): each tensor argument's primal and tangent (None where it has none)."""
    primals, tangents = [], []
    for a in args:
        t = None
        if isinstance(a, Tensor):
            p, t = fwAD.unpack_dual(a)
            if t is not None:
                a = p
        primals.append(a)
        tangents.append(t)
    return primals, tangents


def forward_over_reverse_error(op: str) -> RuntimeError:
    return RuntimeError(f"{op}: forward-mode AD of a gradient (forward-over-reverse, e.g. jacfwd(grad(f)) or a "
                        f"backward inside a dual level through a call that carried tangents) is not supported; "
                        f"use the reference implementation (ganx.ops.reference) for Hessian-vector products")


def _lookup(qualname: str):
    ns, name = qualname.split("::")
    return getattr(getattr(torch.ops, ns), name).default


def register_autograd(qualname: str, backward: Callable, setup_context: Callable, jvp: JvpRule) -> None:
    """torch.library.register_autograd(qualname, backward, setup_context=...) plus forward mode."""
    op = _lookup(qualname)
    opname = qualname.split("::")[1]

    def setup(ctx, inputs, output):
        ctx.ganx_with_tangents = getattr(_state, "with_tangents", False)
        setup_context(ctx, inputs, output)

    def guarded_backward(ctx, *grads):
        if ctx.ganx_with_tangents and dual_level_active():
            raise forward_over_reverse_error(opname)
        return backward(ctx, *grads)

    reverse = _library.autograd.make_autograd_impl(op, _library.autograd.Info(guarded_backward, setup))

    def kernel(keyset, *args):
        if not dual_level_active():
            return reverse(keyset, *args)
        primals, tangents = unpack(args)
        if all(t is None for t in tangents):
            return reverse(keyset, *args)

        def call(*a):
            _state.with_tangents = True
            try:
                return reverse(keyset, *a)
            finally:
                _state.with_tangents = False

        outs, out_tangents = jvp(call, primals, tangents)
        single = isinstance(outs, Tensor)
        outs = (outs,) if single else tuple(outs)
        out_tangents = (out_tangents,) if single else tuple(out_tangents)
        duals = tuple(o if t is None else fwAD.make_dual(o, t) for o, t in zip(outs, out_tangents))
        return duals[0] if single else duals

    _lib.impl(opname, kernel, "Autograd", with_keyset=True)


def register_not_forward_differentiable(qualname: str) -> None:
    """An Autograd kernel for an op without derivatives (the backward ops): a tangent on an argument
    is an error (it would be dropped: forward-over-reverse), like a reverse-mode graph through it."""
    op = _lookup(qualname)
    opname = qualname.split("::")[1]

    def kernel(keyset, *args):
        if dual_level_active() and any(t is not None for t in unpack(args)[1]):
            raise forward_over_reverse_error(opname)
        if torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args):
            raise RuntimeError(f"{opname}: is not differentiable (double backward, create_graph=True, "
                               f"is not supported)")
        with torch._C._AutoDispatchBelowAutograd():
            return op.redispatch(keyset & torch._C._after_autograd_keyset, *args)

    _lib.impl(opname, kernel, "Autograd", with_keyset=True)


def dot_tangent(g: Tensor, t: Tensor, reduction: int) -> Tensor:
    """The tangent of a loss whose saved gradient is ``g`` (d red(l) / d x, "mean"'s 1/n included)
    along ``t``: element-wise for "none", else sum(g * t); NaN for the mean of nothing (torch's
    mean of an empty tensor is NaN, and so is its tangent)."""
    gt = g.view(t.shape) * t
    if reduction == 0:
        return gt
    if reduction == 1 and t.numel() == 0:
        return torch.full((), float("nan"), dtype=gt.dtype, device=gt.device)
    return gt.sum()


def reduce_tangent(t: Tensor, reduction: int, n: int) -> Tensor:
    """The tangent of red(l) from the element-wise tangent ``t`` of l (0 none, 1 mean, 2 sum)."""
    if reduction == 0:
        return t
    return t.sum() / n if reduction == 1 else t.sum()
