"""The one table of fused activations.

Names, C++ enum values, whether an activation takes ``negative_slope`` and what its backward
reads (``ref``: ``"y"`` the output, ``"x"`` the pre-activation) come from the C++ table
(csrc/activation.h, through ``ganx._C.activations()``); this module pairs each name with its
Python side in ``ganx.ops.reference`` (reference function, torch module, functional calls,
derivative for ``ref="x"``). Every layer reads this table: the ops' argument checks, the
modules, ``ganx.convert`` (which modules and calls join a fused layer) and the reference
implementation. Adding an activation means one line and a case in each switch of
csrc/activation.h and its entries in ``ganx/ops/reference.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple, Type, Union

import torch

from ganx import _ext
from ganx.ops import reference as _ref

__all__ = ["Activation", "ACTIVATIONS", "ACTIVATION_TABLE", "activation_names", "check_activation",
           "activation_of_module", "activation_module_types", "activation_of_call"]


@dataclass(frozen=True)
class Activation:
    name: str
    enum: int                    # the C++ ganx::Act value the kernels switch on
    takes_slope: bool            # uses negative_slope
    ref: str                     # what the backward reads: "y" the output, "x" the pre-activation
    reference: Callable[[torch.Tensor, float], torch.Tensor]
    module: Optional[Type[torch.nn.Module]] = None   # the torch module that is this activation
    module_slope: Optional[Callable[[torch.nn.Module], Union[float, str]]] = None
    derivative: Optional[Callable[[torch.Tensor, float], torch.Tensor]] = None  # act'(x), for ref "x"


def _build() -> Dict[str, Activation]:
    table = {}
    for name, enum, takes_slope, ref in _ext._C.activations():
        if name not in _ref.ACTIVATION_FUNCTIONS:
            raise ImportError(f"ganx: activation {name!r} of the C++ table (csrc/activation.h) has no reference "
                              "function in ganx/ops/reference.py (ACTIVATION_FUNCTIONS)")
        if ref == "x" and name not in _ref.ACTIVATION_DERIVATIVES:
            raise ImportError(f"ganx: activation {name!r} reads its pre-activation in the backward (csrc/activation.h) "
                              "but has no derivative in ganx/ops/reference.py (ACTIVATION_DERIVATIVES)")
        module, module_slope = _ref.ACTIVATION_MODULES.get(name, (None, None))
        table[name] = Activation(name, int(enum), bool(takes_slope), str(ref), _ref.ACTIVATION_FUNCTIONS[name],
                                 module, module_slope, _ref.ACTIVATION_DERIVATIVES.get(name))
    missing = set(_ref.ACTIVATION_FUNCTIONS) - set(table)
    if missing:
        raise ImportError(f"ganx: activations {sorted(missing)} are in ganx/ops/reference.py but not in the C++ "
                          "table (csrc/activation.h): rebuild ganx")
    return table


ACTIVATION_TABLE: Dict[str, Activation] = _build()
ACTIVATIONS: Tuple[str, ...] = tuple(ACTIVATION_TABLE)
# name -> (callables, positional arguments after the input with (default, allowed values))
_CALLS = {n: c for n, c in _ref.ACTIVATION_CALLS.items() if n in ACTIVATION_TABLE}
_CALL_NAME = {f: n for n, (fns, _) in _CALLS.items() for f in fns}
_METHOD_NAME = {m: n for n, ms in _ref.ACTIVATION_METHODS.items() if n in ACTIVATION_TABLE for m in ms}


def activation_names(with_none: bool = True) -> str:
    """"None, 'relu', ..." for error messages."""
    names = [repr(n) for n in ACTIVATIONS if n != "none"]
    return ", ".join((["None"] if with_none else []) + names)


def check_activation(op: str, activation: Optional[str]) -> str:
    """The canonical name ("none" for None); a ValueError naming ``op`` otherwise."""
    act = "none" if activation is None else activation
    if act not in ACTIVATION_TABLE:
        raise ValueError(f"{op}: activation must be one of {activation_names()}, got {activation!r}")
    return act


def activation_module_types() -> Tuple[Type[torch.nn.Module], ...]:
    """The torch module classes some activation of the table is (an instance may still not be one:
    ``nn.GELU()`` is the erf form; see :func:`activation_of_module`)."""
    return tuple(a.module for a in ACTIVATION_TABLE.values() if a.module is not None)


def activation_of_module(m: torch.nn.Module) -> Tuple[Optional[str], Union[float, str]]:
    """``(name, negative_slope)`` of the table's activation module ``m`` is (its exact type), else
    ``(None, reason)``. Never guesses: an unknown module is not an activation."""
    for a in ACTIVATION_TABLE.values():
        if a.module is not None and type(m) is a.module:
            slope = a.module_slope(m)
            if isinstance(slope, str):
                return None, slope
            return a.name, float(slope)
    return None, f"{type(m).__name__} is not an activation ganx fuses ({activation_names(with_none=False)})"


def activation_of_call(target, args, kwargs) -> Optional[Tuple[str, float]]:
    """``(name, negative_slope)`` when ``target(*args, **kwargs)`` (input first) is one of the table's
    activations, as a function or a tensor method name; None otherwise (also for an argument the
    fused op cannot express, e.g. ``F.gelu(x)``, the erf form)."""
    if isinstance(target, str):
        name = _METHOD_NAME.get(target)
        return (name, 0.01) if name is not None and len(args) == 1 and not kwargs else None
    name = _CALL_NAME.get(target) if callable(target) else None
    if name is None:
        return None
    spec = _CALLS[name][1]
    if len(args) - 1 > len(spec) or any(k not in spec for k in kwargs):
        return None
    values = {k: d for k, (d, _) in spec.items()}
    values.update(zip(spec, args[1:]))
    values.update(kwargs)
    for k, (_, allowed) in spec.items():
        if allowed is not None and values[k] not in allowed:
            return None
    slope = values.get("negative_slope", 0.01)
    if isinstance(slope, bool) or not isinstance(slope, (int, float)):
        return None
    if "inplace" in values and not isinstance(values["inplace"], bool):
        return None
    return name, float(slope)
