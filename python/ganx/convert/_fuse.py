"""``fused, report = ganx.fuse(model)``: swap fusable layers of an existing model for ganx's.

Patterns:

* ``nn.Upsample(scale_factor=s, mode="nearest")`` (or ``nn.UpsamplingNearest2d``) whose output
  goes only to ``nn.Conv2d`` layers with an odd kernel 1/3/5, stride 1, padding k//2,
  dilation 1, groups 1, padding_mode "zeros" -> :class:`ganx.nn.UpsampleConv2d` (integer s in
  1..4). One upsample feeding several convolutions (a shared trunk and two heads) fuses into
  each of them.
* ``nn.ConvTranspose2d(kernel_size=4, stride=2, padding=1, output_padding=0, dilation=1,
  groups=1)`` -> :class:`ganx.nn.FusedConvTranspose2d`, on the devices where that is faster
  (see "Never slower" below).
* An ``nn.ReLU`` / ``nn.LeakyReLU`` / ``nn.Tanh`` that is the only consumer of such a layer's
  output joins it as the fused epilogue.

How the model is read. Where the model traces with torch.fx, the patterns are found in the
traced graph, so they are found wherever the modules sit: across ``nn.Sequential``
boundaries, in hand-written ``forward`` methods, in nested custom modules. Where it does not
trace, the module tree is walked and only consecutive modules inside an ``nn.Sequential`` are
paired (the only place where the module order is the data flow). Either way the change is
applied to the model's own module tree: the fused layer takes the *path* (and so the
state_dict key) of the convolution it replaces, the modules it absorbs (the Upsample before
it, the activation after it) become ``nn.Identity`` (no parameters), and the model keeps its
class and its ``forward``. So the original model's state_dict loads into the fused one and
vice versa, with the same keys.

Never slower. On the CPU ganx's ConvTranspose2d(4, 2, 1) is oneDNN's stride-2
deconvolution (the same call ``nn.ConvTranspose2d`` makes) plus ganx's epilogue pass: there
is nothing faster to gain and the extra pass costs a few percent per layer
(benchmarks/bench_dropin.py measures it, per layer and per training step). So on the CPU
these layers are left as they are, with that reason in the report, and so is an Upsample +
Conv2d at a scale other than 2 (measured not faster there); ``where_slower="fuse"`` forces them. At scale 2 the upsample + convolution
pair is fused everywhere: the folded kernel does 2.25x fewer multiply-adds and never builds
the upsampled tensor.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ganx.convert import _trace
from ganx.nn.upsample_conv import FusedConvTranspose2d, UpsampleConv2d

__all__ = ["fuse", "FuseReport", "FuseEntry"]

_WHERE_SLOWER = ("leave", "fuse")
_CPU_CONVT_REASON = ("left as nn.ConvTranspose2d on the CPU: ganx's kernel there is oneDNN's deconvolution (the "
                     "call nn.ConvTranspose2d makes) plus an epilogue pass, so it cannot be faster "
                     "(benchmarks/bench_dropin.py, per layer); where_slower='fuse' forces it")


class _Policy:
    """Which supported patterns are left because ganx is measured slower on the device
    (benchmarks/bench_dropin.py, per layer, CPU 2 threads): on the CPU, ConvTranspose2d(4, 2, 1)
    (0.82-1.01x from 8x8 maps; 0.61-0.67x on 4x4 before the CPU rule took the vendor's deconvolution there too) and Upsample + Conv2d at scale 1 (0.88-0.91x: the upsampling is a copy), 3
    (0.96-0.99x) and 4 (0.43-0.45x); scale 2 is 1.13-6.5x (kernels 1, 3, 5). CUDA has not been measured by this code: it fuses."""

    def __init__(self, device: torch.device, where_slower: str):
        self.cpu = device.type == "cpu" and where_slower == "leave"

    def convT(self) -> Optional[str]:
        return _CPU_CONVT_REASON if self.cpu else None

    def upconv(self, scale: int) -> str:
        if self.cpu and scale != 2:
            return (f"left on the CPU: at scale_factor={scale} ganx's kernel is not faster than nn.Upsample + "
                    "nn.Conv2d (benchmarks/bench_dropin.py, per layer; only scale 2 is); where_slower='fuse' forces it")
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

    @property
    def fused(self) -> List[FuseEntry]:
        return [e for e in self.entries if e.action == "fused"]

    @property
    def left(self) -> List[FuseEntry]:
        return [e for e in self.entries if e.action == "left"]

    def __str__(self) -> str:
        how = f" [{self.method}]" if self.method else ""
        lines = [f"ganx.fuse: {len(self.fused)} fused, {len(self.left)} left as they are{how}"]
        for e in self.entries:
            tail = f"  ({e.reason})" if e.reason else ""
            lines.append(f"  [{e.action}] {e.path or '<root>'}: {e.what}{tail}")
        return "\n".join(lines)


_ACTS = (nn.ReLU, nn.LeakyReLU, nn.Tanh)


def _act_of(m: nn.Module) -> Tuple[str, float]:
    if isinstance(m, nn.ReLU):
        return "relu", 0.01
    if isinstance(m, nn.LeakyReLU):
        return "leaky_relu", float(m.negative_slope)
    return "tanh", 0.01


def _upsample_scale(m: nn.Module) -> Tuple[Optional[int], str]:
    """The integer nearest scale factor of an upsampling module, or (None, reason)."""
    if not isinstance(m, nn.Upsample):  # nn.UpsamplingNearest2d subclasses nn.Upsample
        return None, "not an upsampling module"
    if m.mode != "nearest":
        return None, f"mode={m.mode!r} not supported (only 'nearest')"
    if m.size is not None:
        return None, "Upsample(size=...) not supported (only scale_factor)"
    sf = m.scale_factor
    if isinstance(sf, tuple):
        if len(set(sf)) != 1:
            return None, f"anisotropic scale_factor={sf} not supported"
        sf = sf[0]
    if sf is None or float(sf) != int(sf) or not 1 <= int(sf) <= 4:
        return None, f"scale_factor={sf} not supported (integer 1 to 4)"
    if getattr(m, "recompute_scale_factor", None):
        return None, "recompute_scale_factor=True not supported"
    if _trace.has_hooks(m):
        return None, "the Upsample has hooks, which a fused layer would not run"
    return int(sf), ""


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
    if _trace.has_hooks(c):
        return "the Conv2d has hooks (spectral_norm / weight_norm?), which a fused layer would not run"
    return ""


def _convT_problem(c: nn.ConvTranspose2d) -> str:
    checks = [("kernel_size", c.kernel_size, (4, 4)), ("stride", c.stride, (2, 2)), ("padding", c.padding, (1, 1)),
              ("output_padding", c.output_padding, (0, 0)), ("dilation", c.dilation, (1, 1)),
              ("groups", c.groups, 1), ("padding_mode", c.padding_mode, "zeros")]
    for name, got, want in checks:
        if got != want:
            return f"{name}={got} not supported (only ConvTranspose2d(4, stride=2, padding=1))"
    if _trace.has_hooks(c):
        return "the ConvTranspose2d has hooks (spectral_norm / weight_norm?), which a fused layer would not run"
    return ""


def _with_params(new: nn.Module, old: nn.Module) -> nn.Module:
    """Move `old`'s parameters (the same Parameter objects, so optimizers built on the model
    see them) and its train/eval mode into `new`."""
    new.weight = old.weight  # `new` was built on the meta device: nothing allocated, nothing copied
    if old.bias is not None:
        new.bias = old.bias
    new.train(old.training)
    return new


def _make_upconv(conv: nn.Conv2d, scale: int, act_mod: Optional[nn.Module]) -> nn.Module:
    act, slope = _act_of(act_mod) if act_mod is not None else (None, 0.01)
    new = UpsampleConv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], scale, bias=conv.bias is not None,
                         activation=act, negative_slope=slope, device="meta")
    return _with_params(new, conv)


def _make_convT(conv: nn.ConvTranspose2d, act_mod: Optional[nn.Module]) -> nn.Module:
    act, slope = _act_of(act_mod) if act_mod is not None else (None, 0.01)
    new = FusedConvTranspose2d(conv.in_channels, conv.out_channels, bias=conv.bias is not None, activation=act,
                               negative_slope=slope, device="meta")
    return _with_params(new, conv)


def _what_upconv(scale, k, act_mod):
    tail = f" + {type(act_mod).__name__}" if act_mod is not None else ""
    return f"Upsample(x{scale}) + Conv2d({k}x{k}){tail} -> UpsampleConv2d"


def _what_convT(act_mod):
    tail = f" + {type(act_mod).__name__}" if act_mod is not None else ""
    return f"ConvTranspose2d(4, 2, 1){tail} -> FusedConvTranspose2d"


# ----------------------------------------------------------------- the graph form


def _fuse_graph(target: nn.Module, graph, report: FuseReport, policy: "_Policy") -> None:
    modules: Dict[str, nn.Module] = dict(target.named_modules())
    calls = _trace.call_counts(graph)
    swaps: Dict[str, nn.Module] = {}
    left = report.entries.append

    def mod(n):
        return modules[n.target] if n.op == "call_module" else None

    def shared(n) -> str:
        k = calls[n.target]
        return (f"the module is called {k} times in forward (shared weights): fusing one call would change the others"
                if k > 1 else "")

    def joining_act(conv_node):
        """The activation module that alone consumes conv_node's output, if it can join."""
        users = list(conv_node.users)
        if len(users) != 1:
            return None
        a = users[0]
        m = mod(a)
        if m is None or type(m) not in _ACTS or calls[a.target] != 1 or _trace.has_hooks(m):
            return None
        if a.args != (conv_node,) or a.kwargs:
            return None
        return a

    for n in graph.nodes:
        m = mod(n)
        if m is None:
            if n.op == "call_function" and n.target in (F.interpolate, F.upsample, F.upsample_nearest):
                convs = [u for u in n.users if type(mod(u)) is nn.Conv2d]
                if convs:
                    left(_trace_entry(n, convs[0], "left", "F.interpolate + Conv2d",
                                      "F.interpolate is called in forward: only an nn.Upsample module can be "
                                      "absorbed (write the upsampling as nn.Upsample to fuse it)"))
            continue
        path = n.target
        if isinstance(m, nn.Upsample):
            scale, why = _upsample_scale(m)
            users = list(n.users)
            convs = [u for u in users if type(mod(u)) is nn.Conv2d]
            others = [u for u in users if u not in convs]
            if not why:
                why = shared(n)
            if not why and convs and not others:
                why = policy.upconv(scale)
            if not why and not users:
                why = "its output is not used"
            if not why and others:
                o = others[0]
                om = mod(o)
                if om is not None and "BatchNorm" in type(om).__name__:
                    why = (f"followed by {type(om).__name__} '{o.target}', not Conv2d (a BatchNorm2d between Upsample "
                           "and Conv2d cannot be fused; put it after the convolution)")
                elif not convs:
                    why = f"followed by {_trace.describe(o, modules)}, not Conv2d"
                else:
                    why = f"its output also goes to {_trace.describe(o, modules)}, not only to Conv2d layers"
            if not why:
                for c in convs:
                    problem = _conv_problem(modules[c.target]) or shared(c)
                    if not problem and (c.args != (n,) or c.kwargs):
                        problem = "the Conv2d is called with extra arguments"
                    if problem:
                        why = f"Conv2d '{c.target}': {problem}"
                        break
            if why:
                nxt = f" + Conv2d '{convs[0].target}'" if convs else ""
                left(_trace_entry(n, None, "left", f"{type(m).__name__}{nxt}", why))
                continue
            for c in convs:
                conv = modules[c.target]
                a = joining_act(c)
                act_mod = modules[a.target] if a is not None else None
                swaps[c.target] = _make_upconv(conv, scale, act_mod)
                if a is not None:
                    swaps[a.target] = nn.Identity()
                left(FuseEntry(c.target, "fused", _what_upconv(scale, conv.kernel_size[0], act_mod)))
            swaps[path] = nn.Identity()
        elif type(m) is nn.ConvTranspose2d:
            problem = _convT_problem(m) or shared(n)
            if problem:
                left(FuseEntry(path, "left", "ConvTranspose2d", problem))
                continue
            a = joining_act(n)
            act_mod = modules[a.target] if a is not None else None
            if policy.convT():
                left(FuseEntry(path, "left", _what_convT(act_mod).replace(" -> FusedConvTranspose2d", ""), policy.convT()))
                continue
            swaps[path] = _make_convT(m, act_mod)
            if a is not None:
                swaps[a.target] = nn.Identity()
            left(FuseEntry(path, "fused", _what_convT(act_mod)))
    for qualname, new in swaps.items():
        _trace.set_module(target, qualname, new)


def _trace_entry(n, conv, action, what, reason):
    return FuseEntry(str(n.target) if n.op == "call_module" else n.name, action, what, reason)


# ----------------------------------------------------------------- the module-walking form


def _fuse_sequential(seq: nn.Sequential, prefix: str, report: FuseReport, policy: "_Policy") -> None:
    names = list(seq._modules.keys())
    mods = [seq._modules[n] for n in names]
    consumed = set()

    def act_after(i):
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        return nxt if nxt is not None and type(nxt) in _ACTS and not _trace.has_hooks(nxt) else None

    for i, m in enumerate(mods):
        path = f"{prefix}{names[i]}"
        if i in consumed:
            continue
        if type(m) is nn.Conv2d:
            prev = mods[i - 1] if i > 0 else None
            if prev is None or not isinstance(prev, nn.Upsample):
                continue  # a plain convolution: nothing to fuse, nothing to report
            scale, why = _upsample_scale(prev)
            problem = why or _conv_problem(m) or policy.upconv(scale)
            if problem:
                report.entries.append(FuseEntry(path, "left", f"{type(prev).__name__} + Conv2d", problem))
                continue
            act_mod = act_after(i)
            seq._modules[names[i]] = _make_upconv(m, scale, act_mod)
            seq._modules[names[i - 1]] = nn.Identity()
            if act_mod is not None:
                seq._modules[names[i + 1]] = nn.Identity()
                consumed.add(i + 1)
            report.entries.append(FuseEntry(path, "fused", _what_upconv(scale, m.kernel_size[0], act_mod)))
        elif type(m) is nn.ConvTranspose2d:
            problem = _convT_problem(m)
            if problem:
                report.entries.append(FuseEntry(path, "left", "ConvTranspose2d", problem))
                continue
            act_mod = act_after(i)
            if policy.convT():
                report.entries.append(FuseEntry(path, "left", _what_convT(act_mod).replace(" -> FusedConvTranspose2d", ""),
                                                policy.convT()))
                continue
            seq._modules[names[i]] = _make_convT(m, act_mod)
            if act_mod is not None:
                seq._modules[names[i + 1]] = nn.Identity()
                consumed.add(i + 1)
            report.entries.append(FuseEntry(path, "fused", _what_convT(act_mod)))
        elif isinstance(m, nn.Upsample):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if type(nxt) is not nn.Conv2d:
                scale, why = _upsample_scale(m)
                nxt_name = type(nxt).__name__ if nxt is not None else "nothing (last in its nn.Sequential)"
                report.entries.append(FuseEntry(
                    path, "left", type(m).__name__,
                    why or f"followed by {nxt_name}, not Conv2d (a BatchNorm2d between Upsample and Conv2d "
                           "cannot be fused; put it after the convolution)"))


def _walk(module: nn.Module, prefix: str, report: FuseReport, policy: "_Policy") -> None:
    if isinstance(module, nn.Sequential):
        _fuse_sequential(module, prefix, report, policy)
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        path = f"{prefix}{name}"
        if not isinstance(module, nn.Sequential) and type(child) is nn.ConvTranspose2d:
            problem = _convT_problem(child) or policy.convT()
            if problem:
                report.entries.append(FuseEntry(path, "left", "ConvTranspose2d", problem))
            else:
                # Outside a Sequential the next module is unknown, so no activation joins.
                module._modules[name] = _make_convT(child, None)
                report.entries.append(FuseEntry(path, "fused", _what_convT(None)))
            continue
        if not isinstance(module, nn.Sequential) and isinstance(child, nn.Upsample):
            report.entries.append(FuseEntry(path, "left", type(child).__name__,
                                            "not inside an nn.Sequential and the model does not trace: the module "
                                            "that consumes its output is unknown, so the pair is not fused"))
        _walk(child, f"{path}.", report, policy)


# ----------------------------------------------------------------- entry point


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def fuse(model: nn.Module, inplace: bool = False, *, where_slower: str = "leave",
         device=None, trace: bool = True) -> Tuple[nn.Module, FuseReport]:
    """Replace fusable patterns in ``model`` by ganx's fused modules (see the module docstring).

    Args:
        model: any ``nn.Module`` (a generator, usually).
        inplace: change ``model`` itself instead of a deep copy.
        where_slower: ``"leave"`` (default): a supported pattern for which ganx is measured
            slower on ``device`` (on the CPU: ConvTranspose2d(4, 2, 1), Upsample at scale 1, 3
            or 4) is left as it is, with the reason in the report; ``"fuse"``: fuse it anyway.
        device: the device the model will train on (default: where its parameters are now).
        trace: read the model through torch.fx (default); ``False`` walks the module tree only.

    Returns ``(fused_model, report)``; ``print(report)`` lists what was fused and every
    candidate left alone, with the reason. The fused model computes the same function, keeps
    its class, forward, module names, state_dict keys, Parameter objects, device, dtype and
    train/eval mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"ganx.fuse: model must be an nn.Module, got {type(model).__name__}")
    if where_slower not in _WHERE_SLOWER:
        raise ValueError(f"ganx.fuse: where_slower must be one of {_WHERE_SLOWER}, got {where_slower!r}")
    dev = torch.device(device) if device is not None else _model_device(model)
    policy = _Policy(dev, where_slower)
    target = model if inplace else copy.deepcopy(model)
    report = FuseReport()
    if type(target) is nn.ConvTranspose2d:  # a bare layer: nothing around it to keep
        report.method = "a single layer"
        problem = _convT_problem(target) or policy.convT()
        if problem:
            report.entries.append(FuseEntry("", "left", "ConvTranspose2d", problem))
            return target, report
        report.entries.append(FuseEntry("", "fused", _what_convT(None)))
        return _make_convT(target, None), report
    graph, why = _trace.trace(target) if trace else (None, "trace=False")
    if graph is not None:
        report.method = "torch.fx graph"
        _fuse_graph(target, graph, report, policy)
    else:
        report.method = f"module walk; the model does not trace ({why})"
        _walk(target, "", report, policy)
    return target, report
