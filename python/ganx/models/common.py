"""What the models share: the image sizes they support, the checks of their common arguments, and
how latents are drawn."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["IMAGE_SIZES", "check_common", "set_common", "latents"]

IMAGE_SIZES = (16, 32, 64, 128)


def check_common(image_size: int, channels: int, width: int, num_classes: Optional[int]) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"num_classes must be None (unconditional) or >= 2, got {num_classes}")


def set_common(model, image_size: int, channels: int, width: int, num_classes: Optional[int]) -> None:
    """Check the arguments every model takes (:func:`check_common`) and keep them as ``model``'s
    attributes ``image_size``, ``channels``, ``width``, ``num_classes``."""
    check_common(image_size, channels, width, num_classes)
    model.image_size, model.channels, model.width = int(image_size), int(channels), int(width)
    model.num_classes = num_classes


def latents(n: int, latent_dim: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """``n`` standard-normal latents of size ``latent_dim``, drawn on the CPU (so a seeded
    ``generator`` gives the same z on any device), then moved to ``device``. Every latent ganx
    feeds a generator (training, sample grids, ``ganx sample``, metrics) comes from here."""
    z = torch.randn(n, latent_dim, generator=generator)
    return z.to(device, non_blocking=True) if device is not None else z
