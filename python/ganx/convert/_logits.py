"""``D, criterion, report = ganx.logits_and_bce(D, nn.BCELoss())``: a discriminator that ends in a
sigmoid, trained with BCE on probabilities, becomes one that returns logits, trained with the
fused, numerically stable BCE with logits.

``sigmoid`` then ``log`` loses precision: a confident discriminator's probabilities round to
exactly 0 or 1 and ``nn.BCELoss`` clamps the log at -100, so its gradient vanishes where it
matters most. BCE with logits computes the same loss from the logit, stably.

Finding the sigmoid. Where the discriminator traces with torch.fx, its output is followed
back through shape-only operations (view, reshape, flatten, squeeze, unsqueeze, indexing,
permute, transpose, contiguous, nn.Flatten / nn.Unflatten / nn.Identity) to the sigmoid that
produced it: an ``nn.Sigmoid`` module anywhere (a custom module, a nested head, a
``Sequential``) or a ``torch.sigmoid`` / ``F.sigmoid`` / ``.sigmoid()`` call. An
``nn.Sigmoid`` module is swapped for ``nn.Identity`` in the model's own module tree (the model
keeps its class and forward); a sigmoid *call* is removed from the traced graph, and that
graph becomes the model's forward (an instance attribute): the model keeps its class, its
other methods, its submodules and its state_dict keys. That is refused when the traced
forward depends on train/eval mode (a branch on ``self.training``). Where the model does not trace, its only ``nn.Sigmoid`` module is the candidate.

Proof. Before returning, both models run on a probe batch (``example_input``, or one built
from the first layer's shape), as deep copies in the model's train/eval mode and float64: ``sigmoid(new(x))`` must equal
``old(x)``. If it does not, or the sigmoid's output is used for anything but the output (used
twice, an auxiliary classifier head, a tuple of outputs), or the criterion is not a BCE on
probabilities (``nn.MSELoss`` of an LSGAN, say), the function refuses with the reason and
changes nothing.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.fx as fx
from torch import nn

from ganx.convert import _trace
from ganx.nn import losses as _losses

__all__ = ["logits_and_bce", "LogitsReport"]

_SHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous", "view_as", "reshape_as",
                  "permute", "transpose", "t", "__getitem__"}
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, torch.permute, torch.transpose,
                    operator.getitem, torch.t}
_SHAPE_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity)
_PROBE_SIZES = (64, 32, 28, 128, 16, 96, 256, 48)


@dataclass
class LogitsReport:
    removed: Optional[str]   # where the sigmoid was: a module path, or the graph node's name
    message: str
    method: str = ""         # "torch.fx graph" / "module walk (...)"
    probe: str = ""          # what the proof ran on and its result

    def __str__(self) -> str:
        return self.message


def _refuse(msg: str):
    raise ValueError(f"ganx.logits_and_bce: {msg}")


def _is_sigmoid(n: fx.Node, modules) -> bool:
    if n.op == "call_module":
        return type(modules[n.target]) is nn.Sigmoid
    if n.op == "call_function":
        return n.target in _trace.sigmoid_targets()
    return n.op == "call_method" and n.target == "sigmoid"


def _is_shape_only(n: fx.Node, modules) -> bool:
    if n.op == "call_module":
        return type(modules[n.target]) in _SHAPE_MODULES and not _trace.has_hooks(modules[n.target])
    if n.op == "call_function":
        return n.target in _SHAPE_FUNCTIONS
    return n.op == "call_method" and n.target in _SHAPE_METHODS


def _value_users(n: fx.Node):
    return [u for u in n.users if not _trace.is_metadata_use(u)]


def _find_in_graph(target: nn.Module, graph: fx.Graph):
    """The sigmoid node whose output (up to shape-only ops) is the model's output, or a refusal."""
    modules = dict(target.named_modules())
    out = next(n for n in graph.nodes if n.op == "output")
    val = out.args[0]
    if isinstance(val, (tuple, list, dict)):
        k = len(val)
        items = list(val.values()) if isinstance(val, dict) else list(val)
        sig = [i for i, v in enumerate(items) if isinstance(v, fx.Node) and _ends_in_sigmoid(v, modules)]
        if not sig:
            _refuse(f"the discriminator returns {k} outputs and none of them is a sigmoid's output (up to shape "
                    "operations): there is no sigmoid to remove (if the model returns logits already, use "
                    "ganx.nn.BCEWithLogitsLoss on the real/fake output; a generator returning an image and "
                    "attention maps, as in SAGAN, is not a discriminator); nothing was changed")
        _refuse(f"the discriminator returns {k} outputs (output {', '.join(map(str, sig))} "
                f"{'comes' if len(sig) == 1 else 'come'} from a sigmoid): which one is the real/fake probability "
                "that nn.BCELoss reads cannot be told, so nothing was changed. Remove that sigmoid by hand and use "
                "ganx.nn.BCEWithLogitsLoss (or ganx.nn.DiscriminatorBCELoss) on that output.")
    if not isinstance(val, fx.Node):
        _refuse(f"the discriminator's output is a constant ({type(val).__name__}), not a computed tensor")
    node, chain = val, []
    while _is_shape_only(node, modules):
        chain.append(node)
        node = node.args[0] if node.args else None
        if not isinstance(node, fx.Node):
            _refuse("could not follow the output back through its shape operations")
    if not _is_sigmoid(node, modules):
        if node.op == "call_module" and isinstance(modules[node.target], (nn.Sigmoid, nn.LogSigmoid)):
            _refuse(f"the output comes from {_trace.describe(node, modules)}, a subclass or variant of nn.Sigmoid "
                    "that may compute something else; nothing was changed")
        _refuse(f"the discriminator's output comes from {_trace.describe(node, modules)}, not from a sigmoid "
                "(up to view/reshape/flatten/squeeze/unsqueeze/indexing). If it already returns logits, use "
                "ganx.nn.BCEWithLogitsLoss directly; nothing was changed.")
    for n in [node] + chain:
        users = _value_users(n)
        if len(users) != 1:
            what = "the sigmoid's output" if n is node else f"the output of {_trace.describe(n, modules)}"
            names = ", ".join(_trace.describe(u, modules) for u in users)
            _refuse(f"{what} is used {len(users)} times ({names}): removing the sigmoid would change the other uses "
                    "(a second head or a feature output?); nothing was changed")
    if node.op == "call_module":
        calls = _trace.call_counts(graph)[node.target]
        if calls != 1:
            _refuse(f"the nn.Sigmoid '{node.target}' is called {calls} times in forward: swapping it would change "
                    "the other calls; nothing was changed")
        if _trace.has_hooks(modules[node.target]):
            _refuse(f"the nn.Sigmoid '{node.target}' has hooks; nothing was changed")
    return node


def _ends_in_sigmoid(node, modules) -> bool:
    while isinstance(node, fx.Node) and _is_shape_only(node, modules):
        node = node.args[0] if node.args else None
    return isinstance(node, fx.Node) and _is_sigmoid(node, modules)


def _find_by_walk(target: nn.Module) -> str:
    sigs = [name for name, m in target.named_modules() if type(m) is nn.Sigmoid]
    if not sigs:
        _refuse("the discriminator does not trace with torch.fx and has no nn.Sigmoid module; if it applies "
                "torch.sigmoid in its forward, remove that call by hand and use ganx.nn.BCEWithLogitsLoss. "
                "Nothing was changed.")
    if len(sigs) > 1:
        _refuse(f"the discriminator does not trace with torch.fx and has {len(sigs)} nn.Sigmoid modules "
                f"({', '.join(sigs)}): which one makes the output cannot be told; nothing was changed")
    return sigs[0]


def _first_layer(model: nn.Module, graph: Optional[fx.Graph]):
    if graph is not None:
        modules = dict(model.named_modules())
        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            return None
        order = [modules[n.target] for n in graph.nodes if n.op == "call_module"]
    else:
        order = list(model.modules())
    for m in order:
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Conv3d)):
            return m
    return None


def _probe_inputs(model, graph, example_input):
    if example_input is not None:
        return [tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)]
    first = _first_layer(model, graph)
    if isinstance(first, nn.Linear):
        return [(torch.randn(2, first.in_features),)]
    if isinstance(first, nn.Conv2d):
        return [(torch.randn(2, first.in_channels, s, s),) for s in _PROBE_SIZES]
    if isinstance(first, nn.Conv1d):
        return [(torch.randn(2, first.in_channels, s),) for s in _PROBE_SIZES]
    if isinstance(first, nn.Conv3d):
        return [(torch.randn(2, first.in_channels, s, s, s),) for s in (16, 32, 8)]
    return []


def _as(x, dtype, device):
    return x.to(device=device, dtype=dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else (
        x.to(device) if isinstance(x, torch.Tensor) else x)


def _prove(old: nn.Module, new: nn.Module, graph, example_input) -> str:
    """Run both on a probe batch (deep copies in the model's train/eval mode, float64 where possible, the
    same RNG seed): sigmoid(new(x)) == old(x)."""
    candidates = _probe_inputs(old, graph, example_input)
    if not candidates:
        _refuse("no probe batch: the discriminator's input shape cannot be told from its first layer (or it takes "
                "several inputs); pass example_input=(a batch of its inputs). Nothing was changed.")
    device = next((t.device for t in list(old.parameters()) + list(old.buffers())), torch.device("cpu"))
    last_err = None
    mode = "train mode" if old.training else "eval mode"
    for dtype in (torch.float64, None):
        for inputs in candidates:
            try:  # fresh copies for each try: a failed train-mode call may have moved BatchNorm statistics
                o = _trace.deepcopy(old)
                c = _trace.deepcopy(new)
                if dtype is not None:
                    o, c = o.to(dtype), c.to(dtype)
            except Exception as e:  # a module that refuses float64: prove in its own dtype
                last_err = e
                break
            p = next((t for t in o.parameters()), None)
            dt = dtype or (p.dtype if p is not None else torch.float32)
            xs = tuple(_as(x, dt, device) for x in inputs)
            fork = [] if device.type != "cuda" else [device]
            try:
                with torch.no_grad():
                    with torch.random.fork_rng(devices=fork):  # the same dropout masks for both
                        torch.manual_seed(0)
                        want = o(*xs)
                    with torch.random.fork_rng(devices=fork):
                        torch.manual_seed(0)
                        got = c(*xs)
            except Exception as e:
                last_err = e
                continue
            if not isinstance(want, torch.Tensor) or not isinstance(got, torch.Tensor):
                _refuse("the probe batch gave non-tensor outputs; nothing was changed")
            shape = "x".join(str(s) for s in xs[0].shape) if isinstance(xs[0], torch.Tensor) else "?"
            if got.shape != want.shape:
                _refuse(f"proof failed on a probe batch ({shape}): the converted discriminator's output has shape "
                        f"{tuple(got.shape)}, the original's {tuple(want.shape)}; nothing was changed")
            tol = 1e-12 if dt == torch.float64 else 1e-6
            err = (torch.sigmoid(got) - want).abs().max().item() if want.numel() else 0.0
            if not err <= tol:
                _refuse(f"proof failed on a probe batch ({shape}): max |sigmoid(new D(x)) - old D(x)| = {err:.3e} "
                        f"(> {tol:g}): the sigmoid found does not make the output; nothing was changed")
            return f"probe batch {shape} ({str(dt).replace('torch.', '')}, {mode}): max |sigmoid(logits) - D(x)| = {err:.1e}"
    _refuse(f"could not run the discriminator on a probe batch ({type(last_err).__name__}: "
            f"{str(last_err).splitlines()[0][:160] if str(last_err) else ''}); pass example_input=(a batch of its "
            "inputs). Nothing was changed.")


def _convert_criterion(criterion):
    if criterion is None:
        return None
    if isinstance(criterion, (nn.BCELoss, _losses.BCELoss)):
        return _losses.BCEWithLogitsLoss(weight=criterion.weight, reduction=criterion.reduction)
    name = type(criterion).__name__
    hint = {"MSELoss": " (an LSGAN's least-squares loss: it is computed on the sigmoid's output, so the sigmoid "
                       "must stay)",
            "BCEWithLogitsLoss": " (already a loss on logits: with a sigmoid in the discriminator that applies the "
                                 "sigmoid twice; nothing to convert)",
            "L1Loss": " (computed on the sigmoid's output, so the sigmoid must stay)"}.get(name, "")
    raise TypeError(f"ganx.logits_and_bce: criterion must be nn.BCELoss (any weight / reduction), got {name}{hint}; "
                    "nothing was changed")


def logits_and_bce(discriminator: nn.Module, criterion: Optional[nn.Module] = None, inplace: bool = False, *,
                   example_input: Union[torch.Tensor, Sequence, None] = None, trace: bool = True
                   ) -> Tuple[nn.Module, Optional[nn.Module], LogitsReport]:
    """Turn "discriminator ending in a sigmoid + nn.BCELoss" into "logits + fused BCE with logits".

    Args:
        discriminator: any ``nn.Module`` whose output is a sigmoid's output up to shape-only
            operations (see the module docstring).
        criterion: ``nn.BCELoss`` (any weight / reduction) -> ``ganx.nn.BCEWithLogitsLoss``
            with the same weight and reduction; ``None`` converts the discriminator only.
            Anything else is refused (TypeError).
        inplace: change ``discriminator`` itself (when a module swap does it) instead of a copy.
        example_input: a batch of the discriminator's inputs (a tensor or a tuple) for the
            proof; by default one is built from the first layer (needed for several inputs).
        trace: find the sigmoid through torch.fx (default); ``False``: by the module walk.

    Returns ``(discriminator, criterion, report)``. Refusals are ``ValueError``s that say why
    and leave the model unchanged.
    """
    if not isinstance(discriminator, nn.Module):
        raise TypeError(f"ganx.logits_and_bce: discriminator must be an nn.Module, got {type(discriminator).__name__}")
    new_crit = _convert_criterion(criterion)
    work = _trace.deepcopy(discriminator)
    graph, why = _trace.trace(work) if trace else (None, "trace=False")
    if graph is not None:
        method = "torch.fx graph"
        node = _find_in_graph(work, graph)
        if node.op == "call_module":
            where, kind = node.target, "module"
        else:
            where, kind = node.name, "call"
            problem = _trace.forward_problem(discriminator, graph)
            if problem:
                _refuse(f"the sigmoid is a call ({_trace.describe(node, dict(work.named_modules()))}) inside forward: "
                        f"removing it means running the traced forward instead of the model's own, but {problem}. "
                        "Remove the call by hand and use ganx.nn.BCEWithLogitsLoss; nothing was changed.")
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            graph.lint()
    else:
        method = f"module walk; the model does not trace ({why})"
        where, kind = _find_by_walk(work), "module"
    if kind == "module":
        _trace.set_module(work, where, nn.Identity())
        converted = work
    else:
        converted = _trace.deepcopy(discriminator)
        _trace.install_forward(converted, graph)
    probe = _prove(discriminator, converted, graph, example_input)
    if inplace:
        if kind == "module":
            _trace.set_module(discriminator, where, nn.Identity())
        else:
            _trace.install_forward(discriminator, graph)
        converted = discriminator
    what = (f"removed the nn.Sigmoid at '{where}'" if kind == "module" else
            f"removed the sigmoid call '{where}': the model keeps its class ({type(discriminator).__name__}) and "
            "its methods, modules and state_dict keys, and its forward is now the traced forward without that "
            "call (an instance attribute: torch.save(model) of the whole object cannot pickle it; save its "
            "state_dict)")
    msg = (f"ganx.logits_and_bce: {what}; the discriminator now returns logits"
           + ("; nn.BCELoss -> ganx.nn.BCEWithLogitsLoss (same loss, numerically stable, fused)" if new_crit else "")
           + f". Proven on a {probe}. Code that reads probabilities from the discriminator must now apply "
           "torch.sigmoid itself.")
    return converted, new_crit, LogitsReport(where, msg, method, probe)
