"""``torch.compile(model, backend="ganx")``: Inductor, after ganx's fused ops are put into the graph.

Registered with TorchDynamo through the ``torch_dynamo_backends`` entry point (pyproject.toml),
so ``backend="ganx"`` works without importing ganx; it can also be (for an
install whose entry points are stale).

Dynamo hands over a graph of torch-level calls, with modules inlined: an ``nn.Upsample``, an
``F.interpolate`` call and an upsampling module built in ``forward`` all appear as
``F.interpolate``; an ``nn.Conv2d``, a parametrized (spectral_norm / weight_norm) conv or a
Conv2d subclass computing its weight all appear as ``torch.conv2d(x, w, ...)`` with ``w``
computed by the graph's own nodes. So one rule covers them: a nearest ``F.interpolate`` at an
integer scale (2 on the CPU, and 1-4 there when every conv is 1x1; 1-4 elsewhere: the measured
policy of ``ganx.fuse``) whose every user is a ``conv2d`` taking it as input becomes ganx's
upsample_conv2d per conv, with a following call of an activation of ganx's table (``relu`` /
``leaky_relu`` / ``tanh`` / ``silu`` / ``gelu(approximate="tanh")``; its only user) as the epilogue. The
replacement checks the pattern (kernel 1/3/5, stride 1, "same" padding, dilation 1, groups 1)
on its arguments and computes the unfused expression otherwise, so it is exact by construction.
``ConvTranspose2d(4, 2, 1)`` chains are rewritten on CUDA only (on the CPU ganx's kernel is
oneDNN's deconvolution plus an epilogue pass: nothing to gain). The rewritten graph then goes to
Inductor (``inner="aot_eager"`` / ``"eager"`` for debugging, see :func:`make_backend`).

``ganx.convert._compile.LAST`` lists what the last compiled graph had rewritten and left.
"""
from __future__ import annotations

from typing import Callable, List

import torch
import torch.fx as fx

from ganx.convert import _fuse
from ganx.ops.activations import activation_of_call

__all__ = ["ganx_backend", "make_backend", "LAST"]

LAST: List[str] = []



def _device_of(example_inputs) -> str:
    for t in example_inputs:
        if isinstance(t, torch.Tensor):
            return t.device.type
    return "cpu"


def _act_user(node: fx.Node):
    users = list(node.users)
    if len(users) != 1:
        return None
    a = users[0]
    if not a.args or a.args[0] is not node:
        return None
    if a.op in ("call_function", "call_method"):
        hit = activation_of_call(a.target, a.args, a.kwargs)  # the activation table's calls
        if hit is not None:
            return a, hit[0], hit[1]
    return None


def _kernel_of(conv_node: fx.Node):
    """The kernel size of a conv2d call from its weight's example value (None when unknown)."""
    if conv_node.op != "call_function" or conv_node.target not in _fuse._CONV_FNS:
        return None
    w = conv_node.args[1] if len(conv_node.args) > 1 else conv_node.kwargs.get("weight")
    v = w.meta.get("example_value", w.meta.get("val")) if isinstance(w, fx.Node) else None
    return int(v.shape[-1]) if isinstance(v, torch.Tensor) and v.dim() == 4 else None


def rewrite(gm: fx.GraphModule, device: str = "cpu") -> List[str]:
    """Rewrite ``gm``'s graph in place (see the module docstring); returns report lines."""
    g = gm.graph
    lines: List[str] = []
    for n in list(g.nodes):
        if n.op == "call_function" and n.target in _fuse._INTERP:
            b = _fuse._interp_args(n)
            if b is None:
                lines.append(f"left {n.name}: could not read its arguments")
                continue
            scale, why = _fuse._upsample_params(b["mode"], b["size"], b["scale_factor"], b["recompute_scale_factor"])
            if not why and (b["align_corners"] or b["antialias"]):
                why = "align_corners / antialias not supported"
            users = list(n.users)
            if not why and device == "cpu" and scale != 2 and not (users and all(_kernel_of(u) == 1 for u in users)):
                why = f"scale {scale} on the CPU (ganx is not faster there for a 3x3 or 5x5 kernel; 1x1 is)"
            if not why and (not users or any(u.op != "call_function" or u.target not in _fuse._CONV_FNS
                                             or not u.args or u.args[0] is not n
                                             or n in list(u.args[1:]) + list(u.kwargs.values()) for u in users)):
                why = "its output does not go only to convolutions"
            if why:
                lines.append(f"left {n.name}: {why}")
                continue
            low = b["input"]
            for c in users:
                a = _act_user(c)
                act, slope = (a[1], a[2]) if a is not None else (None, 0.01)
                args = _fuse._bind(_fuse._CONV_ARGS, _fuse._CONV_DEFAULTS, c.args, c.kwargs)
                args[0] = low
                with g.inserting_before(c):
                    new = g.call_function(_fuse._upconv_or_exact, tuple(args) + (scale, act, slope))
                out = c
                if a is not None:
                    a[0].replace_all_uses_with(new)
                    g.erase_node(a[0])
                out.replace_all_uses_with(new)
                g.erase_node(out)
                lines.append(f"fused {n.name} (x{scale}) + {c.name}" + (f" + {act}" if act else ""))
            g.erase_node(n)
        elif n.op == "call_function" and n.target in _fuse._CONVT_FNS:
            if device == "cpu":
                lines.append(f"left {n.name}: ConvTranspose2d on the CPU (oneDNN's deconvolution already)")
                continue
            a = _act_user(n)
            act, slope = (a[1], a[2]) if a is not None else (None, 0.01)
            args = _fuse._bind(_fuse._CONVT_ARGS, _fuse._CONVT_DEFAULTS, n.args, n.kwargs)
            with g.inserting_before(n):
                new = g.call_function(_fuse._convT_or_exact, tuple(args) + (act, slope))
            if a is not None:
                a[0].replace_all_uses_with(new)
                g.erase_node(a[0])
            n.replace_all_uses_with(new)
            g.erase_node(n)
            lines.append(f"fused {n.name}" + (f" + {act}" if act else "") + " (checked on each call)")
    g.lint()
    gm.recompile()
    return lines


def make_backend(inner: str = "inductor") -> Callable:
    """A backend that rewrites the graph, then compiles it with ``inner`` ("inductor",
    "aot_eager" or "eager")."""
    if inner not in ("inductor", "aot_eager", "eager"):
        raise ValueError(f"ganx backend: inner must be 'inductor', 'aot_eager' or 'eager', got {inner!r}")

    def backend(gm: fx.GraphModule, example_inputs):
        LAST[:] = rewrite(gm, _device_of(example_inputs))
        if inner == "eager":
            return gm.forward
        if inner == "aot_eager":
            return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(gm, example_inputs)

    return backend


ganx_backend = make_backend("inductor")


def register() -> None:
    """Register ``backend="ganx"`` with TorchDynamo unless the entry point already did."""
    try:
        from torch._dynamo.backends import registry
    except ImportError:  # pragma: no cover
        return
    if "ganx" not in registry._COMPILER_FNS:
        registry.register_backend(ganx_backend, "ganx")
