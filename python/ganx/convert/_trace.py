"""torch.fx helpers shared by ``fuse`` and ``logits_and_bce``.

Both conversions *analyse* a model by tracing it (so a pattern is found wherever the modules
sit: across ``nn.Sequential`` boundaries, in hand-written ``forward`` methods, in nested custom
modules) and then, wherever they can, *apply* the change to the model's own module tree (one
submodule swapped for another at the same path). The model keeps its class, its ``forward``,
its module names and its state_dict keys. Only a change that no module swap can express (a
``torch.sigmoid`` call inside a ``forward``) needs the traced graph itself as the new forward.
"""
from __future__ import annotations

import copy
import functools
import operator
from collections import Counter
from typing import Dict, Optional, Tuple

import torch
import torch.fx as fx
from torch import nn

__all__ = ["trace", "call_counts", "set_module", "swap_all", "has_hooks", "describe", "is_metadata_use",
           "graph_module_like", "install_forward", "copy_graph", "forward_problem", "CREATED_IN_FORWARD"]

CREATED_IN_FORWARD = "<created in forward>"


class _Tracer(fx.Tracer):
    """torch.nn modules are leaves (fx's default); so are ganx's own fused modules, whose
    forward validates its arguments in Python and is not meant to be traced through, and
    every Conv2d / ConvTranspose2d subclass (a BigGAN-style SNConv2d computes its weight in
    its own forward, under ``torch.no_grad`` for the power iteration: tracing through it would
    lose that context; as a leaf it is analysed as the layer it is and runs its own forward).

    A module built inside ``forward`` (``nn.UpsamplingNearest2d(scale_factor=2)(x)``) is not
    installed in the model; one without parameters or buffers is traced through (its
    functional call appears in the graph) instead of failing the whole trace."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname == CREATED_IN_FORWARD:
            return False
        if type(m).__module__.startswith("ganx.nn"):
            return True
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return True
        return super().is_leaf_module(m, qualname)

    def path_of_module(self, mod: nn.Module) -> str:
        try:
            return super().path_of_module(mod)
        except NameError:
            if next(iter(mod.parameters()), None) is not None or next(iter(mod.buffers()), None) is not None:
                raise
            return CREATED_IN_FORWARD


def trace(model: nn.Module) -> Tuple[Optional[fx.Graph], str]:
    """``(graph, "")`` if ``model`` traces with torch.fx, else ``(None, why)``.

    Tracing runs ``forward`` on proxies; a model whose forward branches on a tensor's value,
    calls non-torch code on it, or takes non-tensor arguments does not trace."""
    # A forward that stores results on its module (self.last_prob = p.mean()) would leave fx
    # proxies behind: remember every module's attributes and put back those tracing changed.
    saved = [(m, dict(m.__dict__)) for m in model.modules()]
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # fx raises many kinds (TraceError, TypeError, AttributeError...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return None, f"{type(e).__name__}: {first[:200]}"
    finally:
        for m, before in saved:
            for k in [k for k, v in m.__dict__.items() if isinstance(v, fx.Proxy)]:
                if k in before:
                    m.__dict__[k] = before[k]
                else:
                    del m.__dict__[k]
    return graph, ""


def call_counts(graph: fx.Graph) -> Counter:
    """How many times each submodule (by qualified name) is called in the traced forward."""
    return Counter(n.target for n in graph.nodes if n.op == "call_module")


def set_module(root: nn.Module, qualname: str, new: nn.Module) -> None:
    """Put ``new`` at ``qualname`` *and* at every other name under which the module now at
    ``qualname`` is registered (one module object reachable under several names, as in a
    ResNet block that registers ``self.conv1`` and again inside ``self.model``): swapping one
    name only would leave the other name calling the old module."""
    swap_all(root, qualname, new)


def swap_all(root: nn.Module, qualname: str, new: nn.Module) -> int:
    old = root.get_submodule(qualname)
    n = 0
    for parent in list(root.modules()):  # each parent object once
        for name, child in list(parent._modules.items()):
            if child is old:
                parent._modules[name] = new
                n += 1
    return n


def copy_graph(graph: fx.Graph) -> Tuple[fx.Graph, Dict[fx.Node, fx.Node]]:
    """A copy of ``graph`` and the map from its nodes to the copy's."""
    new = fx.Graph()
    val_map: Dict[fx.Node, fx.Node] = {}
    out = new.graph_copy(graph, val_map)
    new.output(out)
    return new, val_map


def install_forward(root: nn.Module, graph: fx.Graph) -> None:
    """Make ``graph`` the forward of ``root`` itself (an instance attribute), keeping its class,
    its other methods, its modules and its state_dict keys. The graph's generated code reads
    submodules and parameters by their names from ``root``. Raises if a name is missing."""
    gm = fx.GraphModule(root, graph, class_name=type(root).__name__)
    root.forward = functools.partial(type(gm).forward, root)


def forward_problem(model: nn.Module, graph: fx.Graph, branch_note: str = "") -> str:
    """Why ``graph``, the traced forward of ``model``, cannot stand in for the model's forward (""
    if it can): the model traces in its current mode only, the trace differs between train and
    eval mode (the reason then ends with ``branch_note``), or the graph does not run on the model."""
    try:
        other = deepcopy(model).train(not model.training)
        g2, why = trace(other)
        if g2 is None:
            return f"the model traces in {'train' if model.training else 'eval'} mode only ({why})"
        if g2.python_code("self").src != graph.python_code("self").src:
            return ("the traced forward differs between train and eval mode (it branches on self.training)"
                    + branch_note)
        install_forward(deepcopy(model), copy_graph(graph)[0])
    except Exception as e:  # noqa: BLE001
        return f"the traced forward cannot run on the model ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    return ""


def has_hooks(m: nn.Module) -> bool:
    """Hooks (old-style spectral_norm / weight_norm are pre-hooks) would be lost by a swap."""
    return bool(m._forward_hooks or m._forward_pre_hooks or getattr(m, "_backward_hooks", None)
                or getattr(m, "_forward_hooks_with_kwargs", None))


_METADATA_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "layout"}
_METADATA_METHODS = {"size", "dim", "numel", "ndimension", "type", "get_device"}


def is_metadata_use(user: fx.Node) -> bool:
    """A use that reads only shape / dtype / device (``out.shape[0]``, ``out.size(0)``): its
    result is the same whether the node holds probabilities or logits."""
    if user.op == "call_function" and user.target is getattr and len(user.args) > 1:
        return user.args[1] in _METADATA_ATTRS
    if user.op == "call_method" and user.target in _METADATA_METHODS:
        return True
    if user.op == "call_function" and user.target is len:
        return True
    return False


def describe(node: fx.Node, modules: Dict[str, nn.Module]) -> str:
    """A short human name of what a node does, for report lines."""
    if node.op == "call_module":
        return f"{type(modules[node.target]).__name__} '{node.target}'"
    if node.op == "call_function":
        if node.target is operator.getitem:
            return "indexing"
        return f"{getattr(node.target, '__module__', '') or ''}.{getattr(node.target, '__name__', node.target)}()".lstrip(".")
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "output":
        return "the model's output"
    return f"{node.op} {node.target}"


def graph_module_like(root: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """A GraphModule running ``graph`` that holds *all* of ``root``'s submodules, parameters
    and buffers under their original names (fx's own constructor copies only those the graph
    references, and replaces intermediate containers by plain Modules), so state_dicts load
    both ways with the same keys."""
    gm = fx.GraphModule(root, graph, class_name=type(root).__name__)
    for name, child in root._modules.items():
        gm._modules[name] = child
    for name, p in root._parameters.items():
        if name not in gm._parameters:
            gm.register_parameter(name, p)
    for name, b in root._buffers.items():
        if name not in gm._buffers:
            gm.register_buffer(name, b, persistent=name not in root._non_persistent_buffers_set)
    gm.train(root.training)
    return gm


def sigmoid_targets():
    return {torch.sigmoid, torch.special.expit, torch.nn.functional.sigmoid, torch.Tensor.sigmoid}


def deepcopy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy``, also for a model with hook-style ``torch.nn.utils.weight_norm`` (its computed
    weight is a non-leaf attribute, which deepcopy refuses): the copy gets that attribute detached;
    the hook recomputes it on the copy's next forward."""
    try:
        return copy.deepcopy(model)
    except RuntimeError as e:
        if "deepcopy protocol" not in str(e):
            raise
    saved = []
    for m in model.modules():
        for k, t in list(m.__dict__.items()):
            if isinstance(t, torch.Tensor) and not isinstance(t, nn.Parameter) and not t.is_leaf:
                saved.append((m, k, t))
                m.__dict__[k] = t.detach()
    try:
        return copy.deepcopy(model)
    finally:
        for m, k, t in saved:
            m.__dict__[k] = t
