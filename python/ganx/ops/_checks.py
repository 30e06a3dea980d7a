"""Argument checks shared by the fake kernels (the C++ kernels' twins, same wording)."""
from __future__ import annotations

from typing import Optional

import torch


def check_device(op: str, arg: str, t: Optional[torch.Tensor], ref_arg: str, ref: torch.Tensor) -> None:
    """``t`` on ``ref``'s device, or torch's "not on the expected device" error naming the op and the
    argument (csrc/device_check.h says the same in the real kernels). A CPU tensor mixed with a meta
    one reaches the fake kernel (meta wins the dispatch), which must refuse it rather than return
    an uninitialised CPU tensor."""
    if t is not None and t.device != ref.device:
        raise RuntimeError(f"{op}: {arg} on device {t.device} is not on the expected device {ref.device} "
                           f"(the device of {ref_arg})")


IMPLS = ("fused", "reference")


def check_impl(owner: str, impl: str) -> str:
    """``impl`` is one of :data:`IMPLS` (ganx's kernels, or their pure-PyTorch twins), else a
    ValueError naming ``owner`` (the module, model or loss that takes it). Returns ``impl``."""
    if impl not in IMPLS:
        raise ValueError(f"{owner}: impl must be 'fused' or 'reference', got {impl!r}")
    return impl
