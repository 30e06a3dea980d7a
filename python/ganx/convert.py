"""Drop-in fusion for existing PyTorch GANs: ``fused, report = ganx.fuse(model)``.

Patterns replaced (module tree walked recursively; everything else is left untouched):

* Inside an ``nn.Sequential``: ``nn.Upsample(scale_factor=s, mode="nearest")`` (or
  ``nn.UpsamplingNearest2d``) immediately followed by ``nn.Conv2d`` with an odd kernel
  1/3/5, stride 1, padding k//2, dilation 1, groups 1, padding_mode "zeros"
  -> :class:`ganx.nn.UpsampleConv2d` (integer s in 1..4).
* Anywhere: ``nn.ConvTranspose2d(kernel_size=4, stride=2, padding=1, output_padding=0,
  dilation=1, groups=1)`` -> :class:`ganx.nn.FusedConvTranspose2d` (the same
  phase-decomposed kernels).
* Inside an ``nn.Sequential``: an ``nn.ReLU`` / ``nn.LeakyReLU`` / ``nn.Tanh`` directly
  after such a layer joins it as the fused epilogue.

State-dict compatibility both ways: the fused layer takes the *position* (and so the key)
of the convolution it replaces, and the modules it absorbs (the Upsample before it, the
activation after it) become ``nn.Identity``, which have no parameters. So the original
model's state_dict loads into the fused one and vice versa, with the same keys.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import nn

from ganx.nn.upsample_conv import FusedConvTranspose2d, UpsampleConv2d

__all__ = ["fuse", "FuseReport", "FuseEntry", "logits_and_bce", "LogitsReport"]


@dataclass
class FuseEntry:
    path: str          # dotted module path in the model (of the conv / conv-transpose)
    action: str        # "fused" or "left"
    what: str          # the pattern, e.g. "Upsample(x2) + Conv2d(3x3) + ReLU -> UpsampleConv2d"
    reason: str = ""   # for "left": why it was not fused


@dataclass
class FuseReport:
    entries: List[FuseEntry] = field(default_factory=list)

    @property
    def fused(self) -> List[FuseEntry]:
        return [e for e in self.entries if e.action == "fused"]

    @property
    def left(self) -> List[FuseEntry]:
        return [e for e in self.entries if e.action == "left"]

    def __str__(self) -> str:
        lines = [f"ganx.fuse: {len(self.fused)} fused, {len(self.left)} left as they are"]
        for e in self.entries:
            tail = f"  ({e.reason})" if e.reason else ""
            lines.append(f"  [{e.action}] {e.path or '<root>'}: {e.what}{tail}")
        return "\n".join(lines)


_ACTS = (nn.ReLU, nn.LeakyReLU, nn.Tanh)


def _act_of(m: nn.Module) -> Tuple[Optional[str], float]:
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
    return ""


def _convT_problem(c: nn.ConvTranspose2d) -> str:
    checks = [("kernel_size", c.kernel_size, (4, 4)), ("stride", c.stride, (2, 2)), ("padding", c.padding, (1, 1)),
              ("output_padding", c.output_padding, (0, 0)), ("dilation", c.dilation, (1, 1)),
              ("groups", c.groups, 1), ("padding_mode", c.padding_mode, "zeros")]
    for name, got, want in checks:
        if got != want:
            return f"{name}={got} not supported (only ConvTranspose2d(4, stride=2, padding=1))"
    return ""


def _with_params(new: nn.Module, old: nn.Module) -> nn.Module:
    """Move `old`'s parameter values (and its device, dtype and train/eval mode) into `new`."""
    p = old.weight
    new = new.to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        if old.bias is not None:
            new.bias.copy_(old.bias)
    new.weight.requires_grad_(old.weight.requires_grad)
    if old.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)
    new.train(old.training)
    return new


def _fuse_sequential(seq: nn.Sequential, prefix: str, report: FuseReport) -> None:
    names = list(seq._modules.keys())
    mods = [seq._modules[n] for n in names]
    consumed = set()
    for i, m in enumerate(mods):
        path = f"{prefix}{names[i]}"
        if i in consumed:
            continue
        if isinstance(m, nn.Conv2d) and type(m) is nn.Conv2d:
            prev = mods[i - 1] if i > 0 else None
            if prev is None or not isinstance(prev, nn.Upsample):
                continue  # a plain convolution: nothing to fuse, nothing to report
            scale, why = _upsample_scale(prev)
            problem = why or _conv_problem(m)
            if problem:
                report.entries.append(FuseEntry(path, "left", f"{type(prev).__name__} + Conv2d", problem))
                continue
            k = m.kernel_size[0]
            act, slope, what_act = None, 0.01, ""
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if nxt is not None and type(nxt) in _ACTS:
                act, slope = _act_of(nxt)
                what_act = f" + {type(nxt).__name__}"
            new = UpsampleConv2d(m.in_channels, m.out_channels, k, scale, bias=m.bias is not None,
                                 activation=act, negative_slope=slope)
            seq._modules[names[i]] = _with_params(new, m)
            seq._modules[names[i - 1]] = nn.Identity()
            if act is not None:
                seq._modules[names[i + 1]] = nn.Identity()
                consumed.add(i + 1)
            report.entries.append(FuseEntry(
                path, "fused", f"Upsample(x{scale}) + Conv2d({k}x{k}){what_act} -> UpsampleConv2d"))
        elif type(m) is nn.ConvTranspose2d:
            problem = _convT_problem(m)
            if problem:
                report.entries.append(FuseEntry(path, "left", "ConvTranspose2d", problem))
                continue
            act, slope, what_act = None, 0.01, ""
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if nxt is not None and type(nxt) in _ACTS:
                act, slope = _act_of(nxt)
                what_act = f" + {type(nxt).__name__}"
            new = FusedConvTranspose2d(m.in_channels, m.out_channels, bias=m.bias is not None,
                                       activation=act, negative_slope=slope)
            seq._modules[names[i]] = _with_params(new, m)
            if act is not None:
                seq._modules[names[i + 1]] = nn.Identity()
                consumed.add(i + 1)
            report.entries.append(FuseEntry(path, "fused", f"ConvTranspose2d(4, 2, 1){what_act} -> FusedConvTranspose2d"))
        elif isinstance(m, nn.Upsample):
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            if type(nxt) is not nn.Conv2d:
                scale, why = _upsample_scale(m)
                nxt_name = type(nxt).__name__ if nxt is not None else "nothing"
                report.entries.append(FuseEntry(
                    path, "left", type(m).__name__,
                    why or f"followed by {nxt_name}, not Conv2d (a BatchNorm2d between Upsample and Conv2d "
                           "cannot be fused; put it after the convolution)"))


def _walk(module: nn.Module, prefix: str, report: FuseReport) -> None:
    if isinstance(module, nn.Sequential):
        _fuse_sequential(module, prefix, report)
    for name, child in list(module._modules.items()):
        if child is None:
            continue
        path = f"{prefix}{name}"
        if not isinstance(module, nn.Sequential) and type(child) is nn.ConvTranspose2d:
            problem = _convT_problem(child)
            if problem:
                report.entries.append(FuseEntry(path, "left", "ConvTranspose2d", problem))
            else:
                # Outside a Sequential the next module is unknown, so no activation joins.
                module._modules[name] = _with_params(FusedConvTranspose2d(child.in_channels, child.out_channels,
                                                                          bias=child.bias is not None), child)
                report.entries.append(FuseEntry(path, "fused", "ConvTranspose2d(4, 2, 1) -> FusedConvTranspose2d"))
            continue
        if not isinstance(module, nn.Sequential) and isinstance(child, nn.Upsample):
            report.entries.append(FuseEntry(path, "left", type(child).__name__,
                                            "not inside an nn.Sequential: the module that consumes its output is "
                                            "unknown, so the pair is not fused"))
        _walk(child, f"{path}.", report)


def fuse(model: nn.Module, inplace: bool = False) -> Tuple[nn.Module, FuseReport]:
    """Replace fusable patterns in ``model`` by ganx's fused modules (see the module docstring).

    Returns ``(fused_model, report)``; ``print(report)`` lists what was fused and what was
    left, with the reason. With ``inplace=False`` (default) the model is deep-copied first.
    The fused model computes the same function (float32 tolerance), holds the same parameter
    values under the same state_dict keys, and keeps the device, dtype and train/eval mode.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"ganx.fuse: model must be an nn.Module, got {type(model).__name__}")
    target = model if inplace else copy.deepcopy(model)
    report = FuseReport()
    if type(target) is nn.ConvTranspose2d:  # a bare layer: nothing around it to keep
        problem = _convT_problem(target)
        if problem:
            report.entries.append(FuseEntry("", "left", "ConvTranspose2d", problem))
            return target, report
        report.entries.append(FuseEntry("", "fused", "ConvTranspose2d(4, 2, 1) -> FusedConvTranspose2d"))
        return _with_params(FusedConvTranspose2d(target.in_channels, target.out_channels,
                                                 bias=target.bias is not None), target), report
    _walk(target, "", report)
    return target, report


# ----------------------------------------------------------------- Sigmoid + BCELoss -> logits

@dataclass
class LogitsReport:
    removed: Optional[str]   # path of the removed final Sigmoid, or None
    message: str

    def __str__(self) -> str:
        return self.message


def logits_and_bce(discriminator: nn.Module, criterion: Optional[nn.Module] = None, inplace: bool = False):
    """Turn "discriminator ending in nn.Sigmoid + nn.BCELoss" into "logits + fused BCE with logits".

    ``sigmoid`` followed by ``log`` loses precision (a confident discriminator's probabilities
    round to exactly 0 or 1 and torch clamps the log at -100); BCE with logits computes the
    same loss stably from the logit. The last module of the discriminator (searched through
    trailing nn.Sequential children) must be an ``nn.Sigmoid``; it is replaced by
    ``nn.Identity`` (no parameters: state_dicts are unchanged). ``criterion`` (an
    ``nn.BCELoss``) becomes ``ganx.nn.BCEWithLogitsLoss`` with the same weight and reduction.

    Returns ``(discriminator, criterion, report)``.
    """
    from ganx.nn import losses as _losses  # the fused losses; imported lazily (separate op family)

    target = discriminator if inplace else copy.deepcopy(discriminator)
    parent, key, path = None, None, ""
    node, prefix = target, ""
    while isinstance(node, nn.Sequential) and len(node) > 0:
        last_key = list(node._modules.keys())[-1]
        parent, key, path = node, last_key, f"{prefix}{last_key}"
        node, prefix = node._modules[last_key], f"{path}."
    if parent is None or not isinstance(node, nn.Sigmoid):
        raise ValueError("ganx.logits_and_bce: the discriminator must be an nn.Sequential whose last module "
                         f"(searched through nested Sequentials) is nn.Sigmoid; found {type(node).__name__}. "
                         "Remove the sigmoid by hand and use ganx.nn.BCEWithLogitsLoss.")
    parent._modules[key] = nn.Identity()
    new_crit = None
    if criterion is not None:
        if not isinstance(criterion, nn.BCELoss):
            raise TypeError(f"ganx.logits_and_bce: criterion must be nn.BCELoss, got {type(criterion).__name__}")
        new_crit = _losses.BCEWithLogitsLoss(weight=criterion.weight, reduction=criterion.reduction)
    msg = (f"ganx.logits_and_bce: removed the final Sigmoid at '{path}' (the discriminator now returns logits)"
           + ("; nn.BCELoss -> ganx.nn.BCEWithLogitsLoss (same loss, numerically stable, fused)" if criterion is not None else "")
           + ". Code that reads probabilities from the discriminator must now apply torch.sigmoid itself.")
    return target, new_crit, LogitsReport(path, msg)
