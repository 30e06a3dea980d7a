"""Rebuild models from a checkpoint: their size, measured before anything is allocated (a
checkpoint's or a config's models must fit this machine's memory), and the generator itself
(for `ganx sample` and user code)."""
from __future__ import annotations

import torch

from ganx._limits import check_bytes
from ganx.models.registry import checkpoint_config
from ganx.train.checkpoint import CheckpointError, load_checkpoint

__all__ = ["load_generator", "model_bytes", "check_model_size"]


def model_bytes(build, args) -> int:
    """Bytes of the parameters and buffers of the module ``build(**args)`` (``args`` a dict) or
    ``build(*args)`` (a tuple), found by building it on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        m = build(**args) if isinstance(args, dict) else build(*args)
    return sum(t.numel() * t.element_size() for t in list(m.parameters()) + list(m.buffers()))


def check_model_size(ckpt, name: str, factor: float = 1.0) -> None:
    """Refuse a checkpoint whose model configs describe models too large for this machine's
    memory (a crafted ``width`` of 2^15 would otherwise try to allocate tens of GB)."""
    total = 0
    for kind in ("generator", "discriminator"):
        key = f"{kind}_config"
        try:
            found = checkpoint_config(kind, ckpt)  # (the architecture's class, its arguments)
        except ValueError as e:  # an architecture name this ganx does not know
            raise CheckpointError(f"{name}: {e}") from None
        if found is None:
            continue
        cls, cfg = found
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{name}: {key!r} is not a mapping")
        try:
            total += model_bytes(cls, cfg)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise CheckpointError(f"{name}: its {key} is not a valid model ({e})") from None
    check_bytes(total * factor, f"{name}: the models of its config", CheckpointError)


def load_generator(path, use_ema: bool = True, device="cpu", impl=None):
    """The checkpoint's generator in eval mode (its EMA weights by default, when it has them),
    rebuilt from the architecture name and constructor arguments the checkpoint records.
    Returns (generator, checkpoint dict). ``impl`` overrides the layer implementation."""
    ckpt = load_checkpoint(path)
    name = f"checkpoint {str(path)!r}"
    kwargs = ckpt.get("generator_config")
    if not isinstance(kwargs, dict):
        raise CheckpointError(f"{name} has no generator_config")
    kwargs = dict(kwargs)
    if impl is not None:
        kwargs["impl"] = impl
    check_model_size({"generator_config": kwargs, "generator_arch": ckpt.get("generator_arch", "dcgan")}, name,
                     factor=2.0)
    cls, _ = checkpoint_config("generator", ckpt)
    try:
        G = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{name}: its generator_config is not a valid generator ({e})") from None
    ema = ckpt.get("ema")
    state = ema["module"] if (use_ema and isinstance(ema, dict) and "module" in ema) else ckpt["G"]
    try:
        G.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        raise CheckpointError(f"{name}: its generator weights do not fit its generator_config "
                              f"({' '.join(lines[:2])[:300]})") from None
    return G.to(device).eval().requires_grad_(False), ckpt
