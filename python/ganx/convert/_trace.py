"""torch.fx helpers shared by ``fuse`` and ``logits_and_bce``.

Both conversions *analyse* a model by tracing it (so a pattern is found wherever the modules
sit: across ``nn.Sequential`` boundaries, in hand-written ``forward`` methods, in nested custom
modules) and then, wherever they can, *apply* the change to the model's own module tree (one
submodule swapped for another at the same path). The model keeps its class, its ``forward``,
its module names and its state_dict keys. Only a change that no module swap can express (a
``torch.sigmoid`` call inside a ``forward``) needs the traced graph itself as the new forward.
"""
from __future__ import annotations

import operator
from collections import Counter
from typing import Dict, Optional, Tuple

import torch
import torch.fx as fx
from torch import nn

__all__ = ["trace", "call_counts", "set_module", "has_hooks", "describe", "is_metadata_use", "graph_module_like"]


class _Tracer(fx.Tracer):
    """torch.nn modules are leaves (fx's default); so are ganx's own fused modules, whose
    forward validates its arguments in Python and is not meant to be traced through."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m).__module__.startswith("ganx.nn"):
            return True
        return super().is_leaf_module(m, qualname)


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
    *parents, last = qualname.split(".")
    parent = root
    for p in parents:
        parent = getattr(parent, p)
    parent._modules[last] = new


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
