"""What the models share: the image sizes they support, the checks of their common arguments and of
their conditioning input, and how latents are drawn.

A model is unconditional, class-conditional (``num_classes``: its ``labels`` are (N,) int64 class
indices) or conditioned on a vector per sample (``embedding_dim``: its ``labels`` are (N, E) float
embeddings, e.g. of a text), never both."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["IMAGE_SIZES", "check_common", "set_common", "Conditioned", "check_condition", "check_generator_input",
           "check_discriminator_input", "latents", "projection_logit", "discriminator_config"]

IMAGE_SIZES = (16, 32, 64, 128)


def check_common(image_size: int, channels: int, width: int, num_classes: Optional[int],
                 embedding_dim: Optional[int] = None) -> None:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"num_classes must be None (unconditional) or >= 2, got {num_classes}")
    if embedding_dim is not None and (isinstance(embedding_dim, bool) or embedding_dim < 1):
        raise ValueError(f"embedding_dim must be None (no embedding) or >= 1, got {embedding_dim}")
    if num_classes is not None and embedding_dim is not None:
        raise ValueError(f"a model is conditioned on a class (num_classes) or on an embedding (embedding_dim), "
                         f"not both; got num_classes={num_classes}, embedding_dim={embedding_dim}")


def set_common(model, image_size: int, channels: int, width: int, num_classes: Optional[int],
               embedding_dim: Optional[int] = None) -> None:
    """Check the arguments every model takes (:func:`check_common`) and keep them as ``model``'s
    attributes ``image_size``, ``channels``, ``width``, ``num_classes``, ``embedding_dim``."""
    check_common(image_size, channels, width, num_classes, embedding_dim)
    model.image_size, model.channels, model.width = int(image_size), int(channels), int(width)
    model.num_classes = num_classes
    model.embedding_dim = int(embedding_dim) if embedding_dim is not None else None


class Conditioned:
    """Mixin of every model (listed before ``nn.Module`` in its bases; it adds no parameter, buffer
    or ``__init__``): whether the model is conditional, from the attributes :func:`set_common` keeps."""

    num_classes: Optional[int]
    embedding_dim: Optional[int]

    @property
    def conditional(self) -> bool:
        return self.num_classes is not None or self.embedding_dim is not None


def check_condition(who: str, kind: str, model, labels: Optional[torch.Tensor], n: int) -> None:
    """The conditioning input of ``model``'s forward (``kind`` "generator" or "discriminator",
    ``who`` its class name for the message) checked against the model: (N,) class indices for a
    class-conditional model, (N, E) floating-point vectors for an embedding-conditioned one, None
    for an unconditional one; a ValueError that says which otherwise."""
    e = model.embedding_dim
    if e is not None:
        if labels is None:
            raise ValueError(f"{who}: this {kind} is conditioned on embeddings; pass embeddings (N, {e}) float")
        if labels.dim() != 2 or tuple(labels.shape) != (n, e) or not labels.is_floating_point():
            raise ValueError(f"{who}: this {kind} is conditioned on embeddings; they must be a float tensor of "
                             f"shape ({n}, {e}), got {labels.dtype} of shape {tuple(labels.shape)}")
    elif model.num_classes is not None:
        if labels is None:
            raise ValueError(f"{who}: this {kind} is conditional; pass labels (N,) int64")
        if labels.is_floating_point():
            raise ValueError(f"{who}: this {kind} is class-conditional; labels must be (N,) int64 class indices, "
                             f"got {labels.dtype} of shape {tuple(labels.shape)} (a vector per sample needs a model "
                             f"built with embedding_dim)")
    elif labels is not None:
        raise ValueError(f"{who}: this {kind} is unconditional; labels must be None")


def check_generator_input(who: str, model, z: torch.Tensor, labels: Optional[torch.Tensor]) -> None:
    """A generator's forward input: ``z`` (N, latent_dim) and the conditioning (:func:`check_condition`)."""
    if z.dim() != 2 or z.shape[1] != model.latent_dim:
        raise ValueError(f"{who}: z must be (N, {model.latent_dim}), got {tuple(z.shape)}")
    check_condition(who, "generator", model, labels, z.shape[0])


def check_discriminator_input(who: str, model, x: torch.Tensor, labels: Optional[torch.Tensor]) -> None:
    """A discriminator's forward input: images ``x`` (N, channels, image_size, image_size) and the
    conditioning (:func:`check_condition`)."""
    if x.dim() != 4 or x.shape[1:] != (model.channels, model.image_size, model.image_size):
        raise ValueError(f"{who}: x must be (N, {model.channels}, {model.image_size}, "
                         f"{model.image_size}), got {tuple(x.shape)}")
    check_condition(who, "discriminator", model, labels, x.shape[0])


def latents(n: int, latent_dim: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
    """``n`` standard-normal latents of size ``latent_dim``, drawn on the CPU (so a seeded
    ``generator`` gives the same z on any device), then moved to ``device``. Every latent ganx
    feeds a generator (training, sample grids, ``ganx sample``, metrics) comes from here."""
    z = torch.randn(n, latent_dim, generator=generator)
    return z.to(device, non_blocking=True) if device is not None else z


def projection_logit(model, h: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
    """A projection discriminator's logit from its pooled features ``h`` (N, F): ``head(h)`` plus,
    when conditional, the inner product of ``h`` with the condition's embedding (a class's row of
    ``model.embed``, or ``model.embed`` applied to the vector); Miyato & Koyama 2018."""
    logit = model.head(h).squeeze(1)
    if model.embedding_dim is not None:
        logit = logit + (model.embed(labels.to(h.dtype)) * h).sum(dim=1)
    elif model.conditional:
        logit = logit + (model.embed(labels).to(h.dtype) * h).sum(dim=1)
    return logit


def discriminator_config(model) -> dict:
    """A discriminator's constructor arguments (plain types) to rebuild it, e.g. from a checkpoint:
    the common ones, ``spectral_norm``, ``minibatch_std``, and ``embedding_dim`` only for an
    embedding-conditioned model (so the configs of the others are those of earlier ganx versions)."""
    cfg = {"image_size": model.image_size, "channels": model.channels, "width": model.width,
           "num_classes": model.num_classes, "spectral_norm": model.spectral_norm,
           "minibatch_std": model.minibatch_std}
    if model.embedding_dim is not None:
        cfg["embedding_dim"] = model.embedding_dim
    return cfg
