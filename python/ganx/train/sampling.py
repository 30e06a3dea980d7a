"""Rebuild a generator from a checkpoint (for `ganx sample` and user code)."""
from __future__ import annotations

from ganx.models import build_generator
from ganx.train.checkpoint import load_checkpoint

__all__ = ["load_generator"]


def load_generator(path, use_ema: bool = True, device="cpu", impl=None):
    """The checkpoint's generator in eval mode (its EMA weights by default, when it has them),
    rebuilt from the architecture name and constructor arguments the checkpoint records.
    Returns (generator, checkpoint dict). ``impl`` overrides the layer implementation."""
    ckpt = load_checkpoint(path)
    kwargs = dict(ckpt["generator_config"])
    if impl is not None:
        kwargs["impl"] = impl
    # Checkpoints written before the registry (ganx 0.1.0) record no name: they are all "dcgan".
    G = build_generator(ckpt.get("generator_arch", "dcgan"), kwargs)
    state = ckpt["ema"]["module"] if (use_ema and ckpt.get("ema")) else ckpt["G"]
    G.load_state_dict(state)
    return G.to(device).eval().requires_grad_(False), ckpt
