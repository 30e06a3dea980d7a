"""The one table of fused activations.

Names, C++ enum values and whether an activation takes ``negative_slope`` come from the C++
table (csrc/activation.h, through ``ganx._C.activations()``); this module pairs each name
with its pure-torch reference function. Every layer reads this table: the ops' argument
checks, the modules, ``ganx.convert`` and the reference implementation. Adding an activation
means one line in csrc/activation.h, its reference function in
``ganx.ops.reference.ACTIVATION_FUNCTIONS`` and a case in each kernel switch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch

from ganx import _ext
from ganx.ops.reference import ACTIVATION_FUNCTIONS

__all__ = ["Activation", "ACTIVATIONS", "ACTIVATION_TABLE", "activation_names", "check_activation"]


@dataclass(frozen=True)
class Activation:
    name: str
    enum: int                    # the C++ ganx::Act value the kernels switch on
    takes_slope: bool            # uses negative_slope
    reference: Callable[[torch.Tensor, float], torch.Tensor]


_REFERENCE = ACTIVATION_FUNCTIONS


def _build() -> Dict[str, Activation]:
    table = {}
    for name, enum, takes_slope in _ext._C.activations():
        if name not in _REFERENCE:
            raise ImportError(f"ganx: activation {name!r} of the C++ table (csrc/activation.h) has no reference "
                              "function in ganx/ops/reference.py (ACTIVATION_FUNCTIONS)")
        table[name] = Activation(name, int(enum), bool(takes_slope), _REFERENCE[name])
    missing = set(_REFERENCE) - set(table)
    if missing:
        raise ImportError(f"ganx: activations {sorted(missing)} are in ganx/ops/reference.py but not in the C++ "
                          "table (csrc/activation.h): rebuild ganx")
    return table


ACTIVATION_TABLE: Dict[str, Activation] = _build()
ACTIVATIONS: Tuple[str, ...] = tuple(ACTIVATION_TABLE)


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


