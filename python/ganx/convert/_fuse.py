"""``fused, report = ganx.fuse(model)``: swap fusable layers of an existing model for ganx's.

Patterns:

* Nearest upsampling at an integer scale 1..4 -- ``nn.Upsample`` / ``nn.UpsamplingNearest2d``
  (also one module called several times, every call feeding convolutions), an ``F.interpolate``
  / ``F.upsample_nearest`` call, or a parameter-free upsampling module built inside ``forward``
  (traced through) -- whose output goes only to convolutions with an odd kernel 1/3/5, stride 1,
  padding k//2 or "same", dilation 1, groups 1, zero padding -> ``ganx``'s upsample_conv2d.
  The convolution is an ``nn.Conv2d`` (swapped for :class:`ganx.nn.UpsampleConv2d`), an
  ``F.conv2d`` call (replaced in the graph), or a layer that computes its weight: parametrized
  (``parametrizations.spectral_norm`` / ``weight_norm``), hook-style ``spectral_norm`` /
  ``weight_norm``, a Conv2d subclass computing it in ``forward`` (traced as a leaf). Such a layer
  stays where it is, with its class, and its ``forward`` (an instance attribute) runs the fused op
  on the weight it computes on that call; a custom ``forward`` runs under a TorchFunctionMode
  that replaces its one convolution of the input. The fused callables check the pattern on every
  call and compute the unfused expression otherwise, so they are exact by construction.
* ``nn.ConvTranspose2d(kernel_size=4, stride=2, padding=1, output_padding=0, dilation=1,
  groups=1)`` -> :class:`ganx.nn.FusedConvTranspose2d` (or the layer's own forward patched, as
  above, when its weight is computed, including a SAGAN-style wrapper calling ``layer.forward``),
  on the devices where that is faster (see "Never slower" below).
* An activation of ganx's table -- ``nn.ReLU`` / ``nn.LeakyReLU`` / ``nn.Tanh`` / ``nn.SiLU`` /
  ``nn.GELU(approximate="tanh")`` (or, where the graph is rewritten, an ``F.relu`` /
  ``F.leaky_relu`` / ``torch.tanh`` / ``F.silu`` / ``F.gelu(..., approximate="tanh")`` call;
  ``ganx.ops.activations.ACTIVATION_TABLE`` and ganx/ops/reference.py list them) -- that is the
  only consumer of such a layer's output joins it as the fused epilogue. ``nn.GELU()`` (the erf
  form) does not: it stays as it is after the fused layer, with the reason in the report.

How the model is read. Where the model traces with torch.fx, the patterns are found in the
traced graph, so they are found wherever the modules sit: across ``nn.Sequential``
boundaries, in hand-written ``forward`` methods, in nested custom modules. Where it does not
trace, the module tree is walked and only consecutive modules inside an ``nn.Sequential`` are
paired (the only place where the module order is the data flow). A module swap puts the new
module at every path where the old one is registered (a conv registered as ``self.conv1`` and
inside ``self.model``); the fused layer takes the path (and so the state_dict key) of the
convolution it replaces, and the modules it absorbs become ``nn.Identity``. A functional
upsampling can only be removed from the traced graph: that graph, edited, becomes the model's
``forward`` (an instance attribute; the class, other methods and state_dict keys stay), only
when tracing gives the same graph in train and eval mode.

Proof. Every change is a revertible rewrite. Before returning, the original and the fused model
run on a probe batch (float64 deep copies, in the model's mode, the same RNG seed; the user's
model, its BatchNorm statistics and power-iteration vectors are not touched) and every output
and parameter gradient is compared (1e-9). If they differ, the rewrites are re-added one at a
time and each one that makes them differ is reverted, with the reason in the report. Without a
probe batch (inputs that cannot be told from the layers reading them, no ``example_input``)
nothing is changed.

Never slower. On the CPU ganx's ConvTranspose2d(4, 2, 1) is oneDNN's stride-2
deconvolution (the same call ``nn.ConvTranspose2d`` makes) plus ganx's epilogue pass: there
is nothing faster to gain and the extra pass costs a few percent per layer
(benchmarks/bench_dropin.py measures it, per layer and per training step). So on the CPU
these layers are left as they are, with that reason in the report, and so is an Upsample +
Conv2d with a 3x3 or 5x5 kernel at a scale other than 2 (measured not faster there);
``where_slower="fuse"`` forces them. At scale 2 the upsample + convolution pair is fused
everywhere: the folded kernel does 2.25x fewer multiply-adds and never builds the upsampled
tensor. A 1x1 convolution (a ResNet shortcut) is fused at every scale: it commutes with the
upsampling, so ganx runs it at the input resolution (s*s fewer multiply-adds) and replicates.
"""
from __future__ import annotations

import functools
import inspect
import itertools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.spectral_norm import SpectralNorm as _SNHook
from torch.nn.utils.weight_norm import WeightNorm as _WNHook
from torch.overrides import TorchFunctionMode

from ganx.convert import _trace
from ganx.nn.upsample_conv import FusedConvTranspose2d, UpsampleConv2d
from ganx.ops.activations import ACTIVATION_TABLE, activation_module_types, activation_of_call, activation_of_module
from ganx.ops.upsample_conv import conv_transpose2d_4s2, upsample_conv2d

__all__ = ["fuse", "FuseReport", "FuseEntry"]

_WHERE_SLOWER = ("leave", "fuse")
_CPU_CONVT_REASON = ("left as nn.ConvTranspose2d on the CPU: ganx's kernel there is oneDNN's deconvolution (the "
                     "call nn.ConvTranspose2d makes) plus an epilogue pass, so it cannot be faster "
                     "(benchmarks/bench_dropin.py, per layer); where_slower='fuse' forces it")


class _Policy:
    """Which supported patterns are left on a device because ganx is measured slower there: the
    rule in the module docstring ("Never slower"); the per-layer ratios behind it are measured by
    benchmarks/bench_dropin.py (``--parts resnet`` for 1x1 kernels at scales 1-4) and quoted, with
    their machine, in the README's drop-in section. CUDA has not been measured: it fuses."""

    def __init__(self, device: torch.device, where_slower: str):
        self.cpu = device.type == "cpu" and where_slower == "leave"

    def convT(self) -> Optional[str]:
        return _CPU_CONVT_REASON if self.cpu else None

    def upconv(self, scale: int, kernels: Sequence[Optional[int]] = ()) -> str:
        """Why the upsampling at ``scale`` feeding convolutions with these kernel sizes (None:
        not known before the call) is left, or "" to fuse it."""
        if self.cpu and scale != 2 and not (kernels and all(k == 1 for k in kernels)):
            return (f"left on the CPU: at scale_factor={scale} ganx's kernel is not faster than nn.Upsample + "
                    "nn.Conv2d for a 3x3 or 5x5 kernel (benchmarks/bench_dropin.py, per layer; scale 2, and 1x1 "
                    "kernels at every scale, are); where_slower='fuse' forces it")
        return ""


@dataclass
class FuseEntry:
    path: str          # dotted module path in the model (of the conv / conv-transpose / upsample)
    action: str        # "fused" or "left"
    what: str          # the pattern, e.g. "Upsample(x2) + Conv2d(3x3) + ReLU -> UpsampleConv2d"
    reason: str = ""   # for "left": why it was not fused


@dataclass
class FuseReport:
    entries: List[FuseEntry] = field(default_factory=list)
    method: str = ""   # "torch.fx graph" or "module walk (...why the model does not trace...)"
    proof: str = ""    # what the result was proven on

    @property
    def fused(self) -> List[FuseEntry]:
        return [e for e in self.entries if e.action == "fused"]

    @property
    def left(self) -> List[FuseEntry]:
        return [e for e in self.entries if e.action == "left"]

    def __str__(self) -> str:
        how = f" [{self.method}]" if self.method else ""
        lines = [f"ganx.fuse: {len(self.fused)} fused, {len(self.left)} left as they are{how}"]
        if self.proof:
            lines.append(f"  {self.proof}")
        for e in self.entries:
            tail = f"  ({e.reason})" if e.reason else ""
            lines.append(f"  [{e.action}] {e.path or '<root>'}: {e.what}{tail}")
        return "\n".join(lines)


# The activation modules and calls that may join a fused layer come from the activation table
# (ganx.ops.activations: activation_of_module, activation_of_call).
_ACTS = activation_module_types()
_INTERP = (F.interpolate, F.upsample, F.upsample_nearest)
_CONV_FNS = (torch.conv2d, F.conv2d)
_CONVT_FNS = (torch.conv_transpose2d, F.conv_transpose2d)
_KNOWN_PRE_HOOKS = (_SNHook, _WNHook)
_BILINEAR_WHY = ("cannot be fused: ganx folds nearest-neighbour replication into the convolution's kernel, and a "
                 "{mode} upsampling mixes neighbouring pixels; it stays as it is (only mode='nearest' fuses)")


def _act_of(m: nn.Module) -> Tuple[str, float]:
    """(activation, slope) of a module the table fuses; a ValueError for any other (callers ask
    only after _joinable_act_module)."""
    act, slope = activation_of_module(m)
    if act is None:
        raise ValueError(f"ganx.fuse: {slope}")
    return act, slope


def _joinable_act_module(m: Optional[nn.Module]) -> bool:
    return m is not None and activation_of_module(m)[0] is not None and not _trace.has_hooks(m)


def _act_left_entry(path: str, m: Optional[nn.Module]) -> Optional["FuseEntry"]:
    """A "left" entry for an activation module of a type the table knows that this instance is not
    (nn.GELU() is the erf form), else None."""
    if m is None or type(m) not in _ACTS:
        return None
    act, why = activation_of_module(m)
    return None if act is not None else FuseEntry(path, "left", type(m).__name__,
                                                  f"not joined to the fused layer before it: {why}")


def _upsample_params(mode, size, sf, recompute) -> Tuple[Optional[int], str]:
    if isinstance(mode, fx.Node) or isinstance(size, fx.Node) or isinstance(sf, fx.Node):
        return None, "its arguments are computed at run time (only a constant scale_factor fuses)"
    if mode not in ("nearest", "nearest-exact"):
        return None, f"mode={mode!r} " + _BILINEAR_WHY.format(mode=mode)
    if size is not None:
        return None, "size=... not supported (only an integer scale_factor)"
    if isinstance(sf, (tuple, list)):
        if len(set(sf)) != 1:
            return None, f"anisotropic scale_factor={sf} not supported"
        sf = sf[0]
    if sf is None or float(sf) != int(sf) or not 1 <= int(sf) <= 4:
        return None, f"scale_factor={sf} not supported (integer 1 to 4)"
    if recompute:
        return None, "recompute_scale_factor=True not supported"
    return int(sf), ""


def _upsample_scale(m: nn.Module) -> Tuple[Optional[int], str]:
    """The integer nearest scale factor of an upsampling module, or (None, reason)."""
    if not isinstance(m, nn.Upsample):  # nn.UpsamplingNearest2d subclasses nn.Upsample
        return None, "not an upsampling module"
    scale, why = _upsample_params(m.mode, m.size, m.scale_factor, getattr(m, "recompute_scale_factor", None))
    if not why and _trace.has_hooks(m):
        return None, "the Upsample has hooks, which a fused layer would not run"
    return scale, why


def _conv_problem(c: nn.Conv2d) -> str:
    k = c.kernel_size
    if k[0] != k[1] or k[0] not in (1, 3, 5):
        return f"kernel_size={k} not supported (square 1, 3 or 5)"
    if c.stride != (1, 1):
        return f"stride={c.stride} not supported (1)"
    if isinstance(c.padding, str):
        if c.padding != "same":
            return f"padding={c.padding!r} not supported"
    elif c.padding != (k[0] // 2, k[0] // 2):
        return f"padding={c.padding} not supported ('same': {k[0] // 2})"
    if c.dilation != (1, 1):
        return f"dilation={c.dilation} not supported"
    if c.groups != 1:
        return f"groups={c.groups} not supported"
    if c.padding_mode != "zeros":
        return f"padding_mode={c.padding_mode!r} not supported"
    return ""


def _convT_problem(c: nn.ConvTranspose2d) -> str:
    checks = [("kernel_size", c.kernel_size, (4, 4)), ("stride", c.stride, (2, 2)), ("padding", c.padding, (1, 1)),
              ("output_padding", c.output_padding, (0, 0)), ("dilation", c.dilation, (1, 1)),
              ("groups", c.groups, 1), ("padding_mode", c.padding_mode, "zeros")]
    for name, got, want in checks:
        if got != want:
            return f"{name}={got} not supported (only ConvTranspose2d(4, stride=2, padding=1))"
    return ""


def _layer_route(m: nn.Module, cls) -> Tuple[Optional[str], str, bool]:
    """How a conv layer ``m`` can take the fused op: ``("swap", "", True)`` (a plain layer, replaced by
    ganx's module), ``("patch", "", join)`` (a layer whose weight is computed: spectral_norm /
    weight_norm, parametrized or hook-style, a wrapper that sets it, a subclass whose forward computes
    it; the layer stays, its forward runs the fused op on the weight as the layer computes it on that
    call; ``join``: whether an activation after it may join) or ``(None, reason, False)``."""
    kind = cls.__name__
    if getattr(m, "_backward_hooks", None) or getattr(m, "_backward_pre_hooks", None):
        return None, f"the {kind} has backward hooks, which would see the fused layer's gradients", False
    pre = [h for h in m._forward_pre_hooks.values() if not isinstance(h, _KNOWN_PRE_HOOKS)]
    if pre:
        return None, (f"the {kind} has a forward pre-hook (not spectral_norm / weight_norm) that sees its input: a "
                      "fused layer would hand it the input before upsampling"), False
    if type(m) is cls and not _trace.has_hooks(m) and isinstance(m._parameters.get("weight"), nn.Parameter):
        return "swap", "", True
    plain_forward = type(m).forward is cls.forward
    return "patch", "", plain_forward and not m._forward_hooks


# ----------------------------------------------------------------- what a fused layer runs


def _is1(v) -> bool:
    return v == 1 or (isinstance(v, (tuple, list)) and all(i == 1 for i in v))


def _apply_act(y, act, slope):
    return y if act is None else ACTIVATION_TABLE[act].reference(y, slope)


def _upconv_or_exact(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, scale=2, activation=None,
                     negative_slope=0.01):
    """``act(conv2d(interpolate(x, scale, "nearest"), weight, bias, stride, padding, dilation, groups))``:
    ganx's fused op where the arguments are its pattern (checked on every call), else exactly that."""
    k = weight.shape[-1] if weight.dim() == 4 else 0
    if (k in (1, 3, 5) and weight.shape[-2] == k and _is1(stride) and _is1(dilation) and groups == 1
            and (padding == "same" or padding == k // 2 or tuple(padding) == (k // 2, k // 2) if not isinstance(
                padding, int) else padding == k // 2)
            and x.dim() == 4 and x.shape[1] == weight.shape[1]):
        return upsample_conv2d(x, weight, bias, scale, k // 2, activation, negative_slope)
    y = F.conv2d(F.interpolate(x, scale_factor=scale, mode="nearest"), weight, bias, stride, padding, dilation, groups)
    return _apply_act(y, activation, negative_slope)


def _convT_or_exact(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1,
                    activation=None, negative_slope=0.01):
    two = stride == 2 or tuple(stride) == (2, 2) if not isinstance(stride, int) else stride == 2
    one = padding == 1 or tuple(padding) == (1, 1) if not isinstance(padding, int) else padding == 1
    zero = output_padding == 0 or tuple(output_padding) == (0, 0) if not isinstance(output_padding, int) else \
        output_padding == 0
    if (weight.dim() == 4 and tuple(weight.shape[-2:]) == (4, 4) and two and one and zero and groups == 1
            and _is1(dilation) and x.dim() == 4):
        return conv_transpose2d_4s2(x, weight, bias, activation, negative_slope)
    y = F.conv_transpose2d(x, weight, bias, stride, padding, output_padding, groups, dilation)
    return _apply_act(y, activation, negative_slope)


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
_CONVT_ARGS = ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation")
_CONVT_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1}


def _bind(names, defaults, args, kwargs):
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return [out[n] for n in names]


@dataclass(frozen=True)
class _PatchCfg:
    kind: str                  # "upconv" or "convT"
    scale: int
    activation: Optional[str]
    negative_slope: float
    custom: bool               # the layer's own forward computes the weight: intercept its convolution


class _Intercept(TorchFunctionMode):
    """Runs a layer's own forward and replaces its one convolution of ``x`` by the fused op."""

    def __init__(self, x, cfg: _PatchCfg):
        super().__init__()
        self.x, self.cfg, self.done = x, cfg, False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not self.done and args and args[0] is self.x:
            c = self.cfg
            if c.kind == "upconv" and func in _CONV_FNS:
                self.done = True
                return _upconv_or_exact(*_bind(_CONV_ARGS, _CONV_DEFAULTS, args, kwargs), c.scale, c.activation,
                                        c.negative_slope)
            if c.kind == "convT" and func in _CONVT_FNS:
                self.done = True
                return _convT_or_exact(*_bind(_CONVT_ARGS, _CONVT_DEFAULTS, args, kwargs), c.activation,
                                       c.negative_slope)
        return func(*args, **kwargs)


def _patched_forward(m: nn.Module, cfg: _PatchCfg, x: torch.Tensor) -> torch.Tensor:
    """The forward of a fused layer that keeps its own weight computation (see _layer_route)."""
    if cfg.custom:
        mode = _Intercept(x, cfg)
        with mode:
            out = type(m).forward(m, x)
        if not mode.done:
            raise RuntimeError(f"ganx.fuse: the fused {type(m).__name__}'s forward did not convolve its input")
        return out
    if cfg.kind == "upconv":
        return _upconv_or_exact(x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups, cfg.scale,
                                cfg.activation, cfg.negative_slope)
    return _convT_or_exact(x, m.weight, m.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation,
                           cfg.activation, cfg.negative_slope)


# ----------------------------------------------------------------- rewrites (applied by path, revertible)


def _make_upconv(conv: nn.Conv2d, scale: int, act: Optional[str], slope: float) -> nn.Module:
    new = UpsampleConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], scale, bias=conv.bias is not None,
                         activation=act, negative_slope=slope, device="meta")
    return _with_params(new, conv)


def _make_convT(conv: nn.ConvTranspose2d, act: Optional[str], slope: float) -> nn.Module:
    new = FusedConvTranspose2d(conv.in_channels, conv.out_channels, bias=conv.bias is not None, activation=act,
                               negative_slope=slope, device="meta")
    return _with_params(new, conv)


def _with_params(new: nn.Module, old: nn.Module) -> nn.Module:
    """Move `old`'s parameters (the same Parameter objects, so optimizers built on the model
    see them) and its train/eval mode into `new`."""
    new.weight = old.weight  # `new` was built on the meta device: nothing allocated, nothing copied
    if old.bias is not None:
        new.bias = old.bias
    new.train(old.training)
    return new


def _op_identity(path):
    return lambda root: _trace.swap_all(root, path, nn.Identity())


def _op_layer(path, route, kind, scale, act, slope, custom):
    def op(root):
        m = root.get_submodule(path)
        if route == "swap":
            new = _make_upconv(m, scale, act, slope) if kind == "upconv" else _make_convT(m, act, slope)
            _trace.swap_all(root, path, new)
        else:
            m.forward = functools.partial(_patched_forward, m, _PatchCfg(kind, scale, act, slope, custom))
    return op


class _Rewrite:
    """One fusion: module swaps / forward patches (by path) and graph edits (by node), with its report lines."""

    def __init__(self):
        self.entries: List[FuseEntry] = []
        self.module_ops: List[Callable] = []
        self.graph_ops: List[Callable] = []
        self.drop_nodes: List[fx.Node] = []
        self.route = ""  # a layer's: "swap" (replaced by ganx's module) or "patch" (its forward)


def _build(root: nn.Module, rewrites: Sequence[_Rewrite], graph) -> nn.Module:
    for r in rewrites:
        for op in r.module_ops:
            op(root)
    if any(r.graph_ops for r in rewrites):
        g, vm = _trace.copy_graph(graph)
        for r in rewrites:
            for op in r.graph_ops:
                op(g, vm)
        for r in rewrites:
            for old in r.drop_nodes:
                n = vm[old]
                if n.graph is g and not n.users and n in set(g.nodes):
                    g.erase_node(n)
        g.lint()
        _trace.install_forward(root, g)
    return root


def _what_upconv(scale, k, act, src="Upsample", conv="Conv2d"):
    tail = f" + {act}" if act else ""
    return f"{src}(x{scale}) + {conv}({k}x{k}){tail} -> UpsampleConv2d"


def _what_convT(act):
    tail = f" + {act}" if act else ""
    return f"ConvTranspose2d(4, 2, 1){tail} -> FusedConvTranspose2d"


def _convT_decision(path: str, m: nn.ConvTranspose2d, policy: "_Policy", problem: str = "",
                    act_after: Callable[[], Optional[Tuple[str, str, str, float]]] = lambda: None
                    ) -> Tuple[Optional[_Rewrite], FuseEntry]:
    """The one decision for a ConvTranspose2d layer, wherever fuse meets it (a graph node, an
    nn.Sequential, the module walk, a bare layer): ``(rewrite, its "fused" entry)`` or
    ``(None, a "left" entry with the reason)``. ``problem``: a reason found by the caller (a layer
    called twice); ``act_after()``: the activation that alone consumes the layer's output, as
    ``(module path, label, activation, slope)``, or None (asked only where one may join)."""
    problem = problem or _convT_problem(m)
    route, why, joinable = _layer_route(m, nn.ConvTranspose2d) if not problem else (None, problem, False)
    if route is None:
        return None, FuseEntry(path, "left", type(m).__name__, why)
    a = act_after() if joinable else None
    what = _what_convT(a[1] if a is not None else None)
    if route == "patch":
        what = what.replace("ConvTranspose2d", type(m).__name__, 1).replace(
            "-> FusedConvTranspose2d", "-> fused forward (the layer computes its weight)")
    if policy.convT():
        return None, FuseEntry(path, "left", what.split(" -> ")[0], policy.convT())
    r = _Rewrite()
    r.route = route
    r.module_ops.append(_op_layer(path, route, "convT", 2, a[2] if a is not None else None,
                                  a[3] if a is not None else 0.01, type(m).forward is not nn.ConvTranspose2d.forward))
    if a is not None:
        r.module_ops.append(_op_identity(a[0]))
    r.entries.append(FuseEntry(path, "fused", what))
    return r, r.entries[0]


def _act_label(m_or_name):
    return m_or_name if isinstance(m_or_name, str) else type(m_or_name).__name__


# ----------------------------------------------------------------- the graph form


def _where(n: fx.Node) -> str:
    """A node's place for report lines: the module whose forward made the call, and the call's name."""
    stack = n.meta.get("nn_module_stack") or {}
    owner = ""
    if stack:
        last = list(stack.values())[-1]
        owner = last[0] if isinstance(last, tuple) else str(last)
    return f"{owner}:{n.name}" if owner else n.name


def _interp_args(n: fx.Node):
    try:
        b = inspect.signature(F.interpolate).bind(*n.args, **n.kwargs)
    except TypeError:
        return None
    b.apply_defaults()
    return b.arguments


def _plan_graph(work: nn.Module, graph, policy: "_Policy", report: FuseReport, graph_why: str,
                covered: set) -> List[_Rewrite]:
    modules: Dict[str, nn.Module] = dict(work.named_modules())
    calls = _trace.call_counts(graph)
    rewrites: List[_Rewrite] = []
    record = report.entries.append  # a site's report line (fused sites add theirs with the rewrite)

    def mod(n):
        return modules.get(n.target) if n.op == "call_module" else None

    acts_left = set()  # activation modules already reported as not joining

    def joining_act(conv_node, functional_ok):
        """(node, activation, slope, module path or None) of the activation alone consuming conv_node."""
        users = list(conv_node.users)
        if len(users) != 1:
            return None
        a = users[0]
        m = mod(a)
        if m is not None:
            if not _joinable_act_module(m) or calls[a.target] != 1 or a.args != (conv_node,) or a.kwargs:
                left = _act_left_entry(a.target, m)
                if left is not None and a.target not in acts_left:
                    acts_left.add(a.target)
                    record(left)
                return None
            act, slope = _act_of(m)
            return a, act, slope, a.target
        if not functional_ok or not a.args or a.args[0] is not conv_node:
            return None
        if a.op in ("call_function", "call_method"):
            hit = activation_of_call(a.target, a.args, a.kwargs)
            if hit is not None:
                return a, hit[0], hit[1], None
        return None

    def site_kernels(site_nodes) -> List[Optional[int]]:
        """The kernel size of every convolution the upsampling nodes feed (None where it is not
        known from the graph: an F.conv2d whose weight is computed)."""
        ks: List[Optional[int]] = []
        for n in site_nodes:
            for u in n.users:
                m = mod(u)
                if isinstance(m, nn.Conv2d):
                    ks.append(m.kernel_size[0])
                    continue
                w = u.args[1] if len(u.args) > 1 else u.kwargs.get("weight")
                t = None
                if isinstance(w, fx.Node) and w.op == "get_attr":
                    try:
                        t = functools.reduce(getattr, w.target.split("."), work)
                    except AttributeError:
                        t = None
                ks.append(t.shape[-1] if isinstance(t, torch.Tensor) and t.dim() == 4 else None)
        return ks

    def consumer(u, src):
        """A plan for the conv consuming ``src`` at node ``u``, or (None, reason)."""
        m = mod(u)
        if m is not None:
            if isinstance(m, nn.Conv2d):
                problem = _conv_problem(m)
                if not problem and calls[u.target] > 1:
                    problem = (f"the module is called {calls[u.target]} times in forward (shared weights): fusing "
                               "one call would change the others")
                if not problem and (u.args != (src,) or u.kwargs):
                    problem = "the Conv2d is called with extra arguments"
                route, why, joinable = _layer_route(m, nn.Conv2d) if not problem else (None, problem, False)
                if route is None:
                    return None, f"Conv2d '{u.target}': {why}"
                return dict(node=u, path=u.target, route=route, joinable=joinable, k=m.kernel_size[0],
                            custom=type(m).forward is not nn.Conv2d.forward), ""
            if "BatchNorm" in type(m).__name__:
                return None, (f"followed by {type(m).__name__} '{u.target}', not Conv2d (a BatchNorm2d between "
                              "Upsample and Conv2d cannot be fused; put it after the convolution)")
            return None, f"followed by {_trace.describe(u, modules)}, not Conv2d"
        if u.op == "call_function" and u.target in _CONV_FNS:
            if not u.args or u.args[0] is not src or src in list(u.args[1:]) + list(u.kwargs.values()):
                return None, "F.conv2d takes the upsampled map in another argument"
            return dict(node=u, path=None, route="function", joinable=True, k=None, custom=False), ""
        return None, f"followed by {_trace.describe(u, modules)}, not Conv2d"

    def plan_site(site_nodes, low_of, scale, src_label, module_route_ok, ident_path, where):
        """Fuse every consumer of every node in site_nodes; return (rewrite, "") or (None, why)."""
        plans = []
        for n in site_nodes:
            users = list(n.users)
            if not users:
                return None, "its output is not used"
            for u in users:
                p, why = consumer(u, n)
                if p is None:
                    if len(users) > 1 and "not Conv2d" in why:
                        why = f"its output also goes to {_trace.describe(u, modules)}, not only to Conv2d layers"
                    return None, why
                p["src"] = n
                plans.append(p)
        graph_needed = not module_route_ok or any(p["route"] == "function" for p in plans)
        if graph_needed and graph_why:
            return None, f"fusing it means rewriting the traced forward, but {graph_why}"
        r = _Rewrite()
        for p in plans:
            a = joining_act(p["node"], graph_needed) if p["joinable"] else None
            act, slope = (a[1], a[2]) if a is not None else (None, 0.01)
            label = (type(modules[a[3]]).__name__ if a[3] is not None else act) if a is not None else None
            if a is not None:
                if a[3] is not None:
                    r.module_ops.append(_op_identity(a[3]))
                else:
                    r.graph_ops.append(_op_drop_node(a[0]))
            src, node = p["src"], p["node"]
            if p["route"] == "function":
                r.graph_ops.append(_op_functional_upconv(node, low_of(src), scale, act, slope))
                r.entries.append(FuseEntry(_where(node), "fused", f"{src_label}(x{scale}) + F.conv2d"
                                           + (f" + {label}" if label else "") + " -> ganx upsample_conv2d"))
            else:
                r.module_ops.append(_op_layer(p["path"], p["route"], "upconv", scale, act, slope, p["custom"]))
                if graph_needed:
                    r.graph_ops.append(_op_bypass(node, src, low_of(src)))
                conv_name = type(modules[p["path"]]).__name__
                what = _what_upconv(scale, p["k"], label, src_label, conv_name)
                if p["route"] == "patch":
                    what = what.replace("-> UpsampleConv2d", "-> fused forward (the layer computes its weight)")
                r.entries.append(FuseEntry(p["path"], "fused", what))
        if graph_needed:
            r.drop_nodes.extend(site_nodes)
        elif ident_path is not None:
            r.module_ops.append(_op_identity(ident_path))
        return r, ""

    seen_up, seen_convT = set(), set()
    for n in graph.nodes:
        m = mod(n)
        if m is not None and isinstance(m, nn.Upsample):
            if n.target in seen_up:
                continue
            seen_up.add(n.target)
            covered.add(n.target)
            scale, why = _upsample_scale(m)
            site = [x for x in graph.nodes if x.op == "call_module" and x.target == n.target]
            if not why:
                r, why = plan_site(site, lambda s: s.args[0], scale, "Upsample", True, n.target, n.target)
            if not why:
                why = policy.upconv(scale, site_kernels(site))
            convs = [u.target for u in n.users if isinstance(mod(u), nn.Conv2d)]
            nxt = f" + Conv2d '{convs[0]}'" if convs else ""
            if why:
                record(FuseEntry(n.target, "left", f"{type(m).__name__}{nxt}", why))
                continue
            rewrites.append(r)
            report.entries.extend(r.entries)
        elif n.op == "call_function" and n.target in _INTERP:
            if n.target is not F.interpolate:
                bound = None  # F.upsample / upsample_nearest are traced through to F.interpolate
            bound = _interp_args(n)
            label = "F.interpolate"
            if bound is None:
                record(FuseEntry(_where(n), "left", label, "could not read its arguments"))
                continue
            scale, why = _upsample_params(bound["mode"], bound["size"], bound["scale_factor"],
                                          bound["recompute_scale_factor"])
            if not why and (bound["align_corners"] or bound["antialias"]):
                why = "align_corners / antialias not supported"
            if not why and not isinstance(bound["input"], fx.Node):
                why = "its input is not a traced tensor"
            if not why:
                r, why = plan_site([n], lambda s: _interp_args(s)["input"], scale, label, False, None, _where(n))
            if not why:
                why = policy.upconv(scale, site_kernels([n]))
            if why:
                record(FuseEntry(_where(n), "left", label, why))
                continue
            rewrites.append(r)
            report.entries.extend(r.entries)
        elif m is not None and isinstance(m, nn.ConvTranspose2d):
            if n.target in seen_convT:
                continue
            seen_convT.add(n.target)
            covered.add(n.target)
            path = n.target
            shared = (f"the module is called {calls[path]} times in forward (shared weights): fusing one call "
                      "would change the others") if calls[path] > 1 else ""

            def act_after(n=n):
                a = joining_act(n, False)  # modules only: a (node, act, slope, path)
                return (a[3], type(modules[a[3]]).__name__, a[1], a[2]) if a is not None else None

            r, entry = _convT_decision(path, m, policy, shared, act_after)
            if r is None:
                record(entry)
                continue
            rewrites.append(r)
            report.entries.extend(r.entries)
        elif n.op == "call_function" and n.target in _CONVT_FNS:
            # A wrapper (a SAGAN-style SpectralNorm module) that sets its layer's weight and calls
            # layer.forward(x) directly: fx sees the layer's functional call, not a module call.
            path, m = _forward_called_layer(n, modules)
            if m is None:
                record(FuseEntry(_where(n), "left", "F.conv_transpose2d",
                               "a functional conv_transpose2d call: ganx fuses ConvTranspose2d layers only"))
                continue
            if path in seen_convT:
                continue
            seen_convT.add(path)
            covered.add(path)
            problem = _convT_problem(m)
            if not problem and sum(1 for x in graph.nodes if x.op == "call_function" and x.target in _CONVT_FNS
                                   and _forward_called_layer(x, modules)[1] is m) > 1:
                problem = "the layer is called more than once in forward"
            route, why, _ = _layer_route(m, nn.ConvTranspose2d) if not problem else (None, problem, False)
            what = f"{type(m).__name__} (its forward called directly by '{_where(n).split(':')[0]}')"
            if route is None or policy.convT():
                record(FuseEntry(path, "left", what, why or policy.convT()))
                continue
            r = _Rewrite()
            r.module_ops.append(_op_layer(path, "patch", "convT", 2, None, 0.01,
                                          type(m).forward is not nn.ConvTranspose2d.forward))
            r.entries.append(FuseEntry(path, "fused", what + " -> fused forward (the wrapper computes its weight)"))
            rewrites.append(r)
            report.entries.extend(r.entries)
    return rewrites


def _forward_called_layer(n: fx.Node, modules) -> Tuple[Optional[str], Optional[nn.Module]]:
    """The ConvTranspose2d whose forward made the functional call ``n``, when it can be told: the
    innermost module being traced, or its only ConvTranspose2d child."""
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return None, None
    last = list(stack.values())[-1]
    owner_path = last[0] if isinstance(last, tuple) else str(last)
    owner = modules.get(owner_path)
    if isinstance(owner, nn.ConvTranspose2d):
        return owner_path, owner
    kids = [(f"{owner_path}.{k}" if owner_path else k, c) for k, c in (owner._modules.items() if owner is not None
                                                                       else []) if isinstance(c, nn.ConvTranspose2d)]
    return kids[0] if len(kids) == 1 else (None, None)


def _op_drop_node(old):
    def op(g, vm):
        a = vm[old]
        a.replace_all_uses_with(a.args[0])
        vm[old] = a.args[0]  # later edits that name the dropped node get what replaced it
        g.erase_node(a)
    return op


def _op_bypass(conv_old, src_old, low_old):
    def op(g, vm):
        vm[conv_old].replace_input_with(vm[src_old], vm[low_old])
    return op


def _op_functional_upconv(conv_old, low_old, scale, act, slope):
    def op(g, vm):
        c = vm[conv_old]
        args = list(fx.map_arg(_bind(_CONV_ARGS, _CONV_DEFAULTS, conv_old.args, conv_old.kwargs), lambda n: vm[n]))
        args[0] = vm[low_old]
        with g.inserting_before(c):
            new = g.call_function(_upconv_or_exact, tuple(args) + (scale, act, slope))
        c.replace_all_uses_with(new)
        vm[conv_old] = new
        g.erase_node(c)
    return op


# ----------------------------------------------------------------- the module-walking form


def _plan_walk(module: nn.Module, prefix: str, report: FuseReport, policy: "_Policy", covered: set,
               rewrites: List[_Rewrite]) -> None:
    if isinstance(module, nn.Sequential):
        _plan_sequential(module, prefix, report, policy, covered, rewrites)
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        path = f"{prefix}{name}"
        if not isinstance(module, nn.Sequential) and isinstance(child, nn.ConvTranspose2d):
            covered.add(path)
            # Outside a Sequential the next module is unknown, so no activation joins.
            r, entry = _convT_decision(path, child, policy)
            report.entries.append(entry)
            if r is not None:
                rewrites.append(r)
            continue
        if not isinstance(module, nn.Sequential) and isinstance(child, nn.Upsample):
            covered.add(path)
            report.entries.append(FuseEntry(path, "left", type(child).__name__,
                                            "not inside an nn.Sequential and the model does not trace: the module "
                                            "that consumes its output is unknown, so the pair is not fused"))
        _plan_walk(child, f"{path}.", report, policy, covered, rewrites)


def _plan_sequential(seq: nn.Sequential, prefix: str, report: FuseReport, policy: "_Policy", covered: set,
                     rewrites: List[_Rewrite]) -> None:
    names = list(seq._modules.keys())
    mods = [seq._modules[n] for n in names]
    consumed = set()
    acts_left = set()  # activation modules already reported as not joining

    def act_after(i):
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if _joinable_act_module(nxt):
            return nxt
        left = _act_left_entry(f"{prefix}{names[i + 1]}", nxt)
        if left is not None and left.path not in acts_left:
            acts_left.add(left.path)
            report.entries.append(left)
        return None

    for i, m in enumerate(mods):
        path = f"{prefix}{names[i]}"
        if i in consumed:
            continue
        if isinstance(m, nn.Conv2d):
            prev = mods[i - 1] if i > 0 else None
            if prev is None or not isinstance(prev, nn.Upsample):
                continue  # a plain convolution: nothing to fuse, nothing to report
            covered.add(f"{prefix}{names[i - 1]}")
            scale, why = _upsample_scale(prev)
            problem = why or _conv_problem(m)
            route, rwhy, joinable = _layer_route(m, nn.Conv2d) if not problem else (None, "", False)
            problem = problem or rwhy or policy.upconv(scale, [m.kernel_size[0]])
            if problem:
                report.entries.append(FuseEntry(path, "left", f"{type(prev).__name__} + {type(m).__name__}", problem))
                continue
            act_mod = act_after(i) if joinable else None
            act, slope = _act_of(act_mod) if act_mod is not None else (None, 0.01)
            r = _Rewrite()
            r.module_ops.append(_op_layer(path, route, "upconv", scale, act, slope,
                                          type(m).forward is not nn.Conv2d.forward))
            r.module_ops.append(_op_identity(f"{prefix}{names[i - 1]}"))
            if act_mod is not None:
                r.module_ops.append(_op_identity(f"{prefix}{names[i + 1]}"))
                consumed.add(i + 1)
            r.entries.append(FuseEntry(path, "fused", _what_upconv(scale, m.kernel_size[0], act and type(act_mod).__name__,
                                                                   conv=type(m).__name__)))
            rewrites.append(r)
            report.entries.extend(r.entries)
        elif isinstance(m, nn.ConvTranspose2d):
            covered.add(path)

            def seq_act(i=i):
                a = act_after(i)
                return (f"{prefix}{names[i + 1]}", type(a).__name__, *_act_of(a)) if a is not None else None

            r, entry = _convT_decision(path, m, policy, act_after=seq_act)
            report.entries.append(entry)
            if r is not None:
                rewrites.append(r)
                if len(r.module_ops) > 1:  # the activation joined
                    consumed.add(i + 1)
        elif isinstance(m, nn.Upsample):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if not isinstance(nxt, nn.Conv2d):
                covered.add(path)
                scale, why = _upsample_scale(m)
                nxt_name = type(nxt).__name__ if nxt is not None else "nothing (last in its nn.Sequential)"
                report.entries.append(FuseEntry(
                    path, "left", type(m).__name__,
                    why or f"followed by {nxt_name}, not Conv2d (a BatchNorm2d between Upsample and Conv2d "
                           "cannot be fused; put it after the convolution)"))


def _sweep(work: nn.Module, report: FuseReport, covered: set, traced: bool) -> None:
    """Every Upsample and ConvTranspose2d in the model appears in the report."""
    done = set()
    for p in covered:
        try:
            done.add(id(work.get_submodule(p)))
        except AttributeError:
            pass
    for path, m in work.named_modules():
        if id(m) in done or not isinstance(m, (nn.Upsample, nn.ConvTranspose2d)):
            continue
        done.add(id(m))
        why = ("not called in the traced forward" if traced else
               "the model does not trace and the module walk pairs layers inside an nn.Sequential only")
        report.entries.append(FuseEntry(path, "left", type(m).__name__, why))


# ----------------------------------------------------------------- the proof


_SIZES = (4, 8, 16, 32, 1, 64, 2, 128)


_RESHAPES = {"view", "reshape", "unsqueeze", "flatten", "contiguous", torch.flatten, torch.reshape, torch.unsqueeze}


def _arg_specs(p: fx.Node, modules) -> List[Tuple]:
    """Input shapes a placeholder can take, read from the first layers that consume it (through
    shape-preserving steps: activations, normalisation, upsampling, reshapes)."""
    out = []
    frontier, seen = [(p, False)], set()
    while frontier and not out and len(seen) < 64:
        nxt = []
        for n, reshaped in frontier:
            if n in seen:
                continue
            seen.add(n)
            for u in n.users:
                m = modules.get(u.target) if u.op == "call_module" else None
                if isinstance(m, nn.Embedding):
                    if n is p and u.args and u.args[0] is n:
                        out.append(("long", m.num_embeddings))
                elif isinstance(m, nn.Linear):
                    out.append(("float", (m.in_features,)))
                elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    out += [("img", m.in_channels)] + ([("float", (m.in_channels,))] if reshaped else [])
                elif isinstance(m, nn.Unflatten) and n is p:
                    out.append(("float", (int(torch.tensor(m.unflattened_size).prod()),)))
                elif isinstance(m, nn.Sequential) and len(m):  # not traced through: read its first layer
                    first = m[0]
                    if isinstance(first, nn.Linear):
                        out.append(("float", (first.in_features,)))
                    elif isinstance(first, (nn.Conv2d, nn.ConvTranspose2d)):
                        out.append(("img", first.in_channels))
                else:
                    if n is p and u.op in ("call_method", "call_function"):
                        for a in list(u.args) + list(u.kwargs.values()):
                            am = modules.get(a.target) if isinstance(a, fx.Node) and a.op == "call_module" else None
                            if isinstance(am, nn.Embedding):
                                out.append(("float", (am.embedding_dim,)))
                    if u.args and u.args[0] is n:
                        nxt.append((u, reshaped or u.target in _RESHAPES))
        frontier = nxt
    return list(dict.fromkeys(out))


def _probe_candidates(model: nn.Module, graph, example_input) -> List[Tuple]:
    if example_input is not None:
        return [tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)]
    gen = torch.Generator().manual_seed(0)
    B = 2

    def make(spec, s):
        if spec[0] == "long":
            return torch.randint(0, spec[1], (B,), generator=gen)
        if spec[0] == "float":
            return torch.randn((B,) + spec[1], generator=gen)
        return torch.randn(B, spec[1], s, s, generator=gen)

    if graph is not None:
        modules = dict(model.named_modules())
        phs = [n for n in graph.nodes if n.op == "placeholder" and not n.args]
        specs = [_arg_specs(p, modules) for p in phs]
        if not phs or not all(specs):
            return []
    else:
        first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))), None)
        if first is None:
            return []
        specs = [[("float", (first.in_features,))] if isinstance(first, nn.Linear) else [("img", first.in_channels)]]
    out = []
    for combo in itertools.islice(itertools.product(*specs), 8):
        sizes = _SIZES if any(s[0] == "img" for s in combo) else (None,)
        for s in sizes:
            out.append(tuple(make(spec, s) for spec in combo))
    return out


def _tensors(out) -> List[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    return []


def _run(model: nn.Module, inputs, dtype, device, training: Optional[bool]):
    m = _trace.deepcopy(model)
    if dtype is not None:
        m = m.to(dtype)
    if training is not None:
        m.train(training)
    xs = tuple(x.to(device=device, dtype=dtype or x.dtype) if isinstance(x, torch.Tensor) and x.is_floating_point()
               else (x.to(device) if isinstance(x, torch.Tensor) else x) for x in inputs)
    with torch.random.fork_rng(devices=[] if device.type != "cuda" else [device]):
        torch.manual_seed(0)
        outs = _tensors(m(*xs))
    gen = torch.Generator().manual_seed(1)
    diff = [o for o in outs if o.is_floating_point() and o.requires_grad]
    if diff:
        loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype).to(o.device)).sum() for o in diff)
        loss.backward()
    grads = {k: p.grad for k, p in m.named_parameters()}
    return [o.detach() for o in outs], grads


def _close(got, want, tol) -> Optional[float]:
    """None if close, else the max abs difference (inf on a shape mismatch)."""
    if got is None or want is None:
        return None if got is None and want is None else float("inf")
    if got.shape != want.shape:
        return float("inf")
    if not want.is_floating_point():
        return None if torch.equal(got, want) else float("inf")
    scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    return None if err <= tol * scale else err


class _Prover:
    """Runs the original and a candidate on the same probe batch (deep copies: the user's model,
    its BatchNorm statistics and spectral-norm vectors are not touched) and compares outputs
    and every parameter gradient."""

    def __init__(self, model: nn.Module, graph, example_input, modes):
        self.model, self.modes = model, modes
        self.device = _model_device(model)
        self.inputs, self.dtype, self.why = None, None, ""
        cands = _probe_candidates(model, graph, example_input)
        if not cands:
            self.why = ("no probe batch: the model's inputs cannot be told from its first layers; pass "
                        "example_input=(a batch of its inputs)")
            return
        last = None
        for dtype in (torch.float64, None):
            for xs in cands:
                try:
                    self.want = {t: _run(model, xs, dtype, self.device, t) for t in modes}
                except Exception as e:  # noqa: BLE001
                    last = e
                    continue
                self.inputs, self.dtype = xs, dtype
                return
        self.why = (f"the original model did not run on a probe batch ({type(last).__name__}: "
                    f"{str(last).splitlines()[0][:120] if str(last) else ''}); pass example_input=(a batch of its inputs)")

    def describe(self) -> str:
        shapes = ", ".join("x".join(map(str, x.shape)) for x in self.inputs if isinstance(x, torch.Tensor))
        dt = "float64" if self.dtype is not None else "the model's dtype"
        return f"probe batch ({shapes}, {dt})"

    def check(self, cand: nn.Module) -> str:
        tol = 1e-9 if self.dtype is not None else 1e-4
        for t in self.modes:
            try:
                outs, grads = _run(cand, self.inputs, self.dtype, self.device, t)
            except Exception as e:  # noqa: BLE001
                return f"the converted model failed on the {self.describe()}: {type(e).__name__}: {str(e)[:120]}"
            w_outs, w_grads = self.want[t]
            mode = "" if t is None else (" in train mode" if t else " in eval mode")
            if len(outs) != len(w_outs):
                return f"the converted model returned {len(outs)} tensors, the original {len(w_outs)}{mode}"
            for i, (o, w) in enumerate(zip(outs, w_outs)):
                err = _close(o, w, tol)
                if err is not None:
                    what = (f"shape {tuple(o.shape)} instead of {tuple(w.shape)}" if o.shape != w.shape else
                            f"max |difference| {err:.2e}")
                    return f"output {i} differed from the original's on the {self.describe()}{mode}: {what}"
            for k, w in w_grads.items():
                if k not in grads:
                    return f"parameter '{k}' is missing from the converted model"
                err = _close(grads[k], w, tol)
                if err is not None:
                    return f"the gradient of '{k}' differed from the original's on the {self.describe()}{mode}"
        return ""


# ----------------------------------------------------------------- entry point


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def fuse(model: nn.Module, inplace: bool = False, *, where_slower: str = "leave",
         device=None, trace: bool = True, example_input=None) -> Tuple[nn.Module, FuseReport]:
    """Replace fusable patterns in ``model`` by ganx's fused ops (see the module docstring).

    Args:
        model: any ``nn.Module`` (a generator, usually).
        inplace: change ``model`` itself instead of a deep copy.
        where_slower: ``"leave"`` (default): a supported pattern for which ganx is measured
            slower on ``device`` (on the CPU: ConvTranspose2d(4, 2, 1), Upsample at scale 1, 3
            or 4 feeding a 3x3 or 5x5 conv) is left as it is, with the reason in the report;
            ``"fuse"``: fuse it anyway.
        device: the device the model will train on (default: where its parameters are now).
        trace: read the model through torch.fx (default); ``False`` walks the module tree only.
        example_input: a batch of the model's inputs (a tensor or a tuple) for the proof; by
            default one is built from the layers that read the inputs.

    Returns ``(fused_model, report)``; ``print(report)`` lists what was fused and every
    candidate left alone, with the reason. Before returning, the original and the fused model
    run on a probe batch (float64 deep copies, in the mode the model is in) and their outputs
    and parameter gradients are compared; a rewrite that changes them is reverted and reported.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"ganx.fuse: model must be an nn.Module, got {type(model).__name__}")
    if where_slower not in _WHERE_SLOWER:
        raise ValueError(f"ganx.fuse: where_slower must be one of {_WHERE_SLOWER}, got {where_slower!r}")
    dev = torch.device(device) if device is not None else _model_device(model)
    policy = _Policy(dev, where_slower)
    report = FuseReport()
    if type(model) is nn.ConvTranspose2d:  # a bare layer: nothing around it to keep
        target = model if inplace else _trace.deepcopy(model)
        report.method = "a single layer"
        r, entry = _convT_decision("", target, policy)
        if r is not None and r.route != "swap":
            entry = FuseEntry("", "left", type(target).__name__, "the layer computes its weight (spectral_norm / hooks)")
        report.entries.append(entry)
        if entry.action == "left":
            return target, report
        return _make_convT(target, None, 0.01), report
    work = _trace.deepcopy(model)   # analysed (and traced) only; the result is built from the model itself
    graph, why = _trace.trace(work) if trace else (None, "trace=False")
    covered: set = set()
    if graph is not None:
        report.method = "torch.fx graph"
        graph_why = _trace.forward_problem(
            model, graph, ", so the rewritten graph cannot be the model's forward in both modes")
        rewrites = _plan_graph(work, graph, policy, report, graph_why, covered)
    else:
        report.method = f"module walk; the model does not trace ({why})"
        rewrites = []
        _plan_walk(work, "", report, policy, covered, rewrites)
    _sweep(work, report, covered, graph is not None)
    if not rewrites:
        return (model if inplace else _trace.deepcopy(model)), report
    uses_graph = any(r.graph_ops for r in rewrites)
    modes = (None,) if not uses_graph else (model.training, not model.training)
    prover = _Prover(model, graph, example_input, modes)
    kept: List[_Rewrite] = []
    if prover.inputs is None:
        for r in rewrites:
            r.failed = f"not applied: it could not be proven ({prover.why})"
    else:
        err = prover.check(_build(_trace.deepcopy(model), rewrites, graph))
        if not err:
            kept = list(rewrites)
            report.proof = f"proven on a {prover.describe()}: outputs and parameter gradients equal"
        else:
            # find the offending rewrites: add them one at a time, keep those that stay exact
            for r in rewrites:
                e = prover.check(_build(_trace.deepcopy(model), kept + [r], graph))
                if e:
                    r.failed = f"reverted: with it, {e}"
                else:
                    kept.append(r)
            report.proof = (f"proven on a {prover.describe()} after reverting {len(rewrites) - len(kept)} rewrite(s) "
                            f"(the whole set failed: {err})")
    for r in rewrites:
        if r not in kept:
            for e in r.entries:
                e.action, e.reason = "left", r.failed
    if not kept:
        return (model if inplace else _trace.deepcopy(model)), report
    if any(r.graph_ops for r in kept):
        report.method += "; the model's forward is now the rewritten traced graph (an instance attribute)"
    return _build(model if inplace else _trace.deepcopy(model), kept, graph), report
