"""The contract of a registered architecture (ganx.models.registry), as Protocols.

A registry entry is an ``nn.Module`` *class* (:class:`GeneratorArch` / :class:`DiscriminatorArch`):

* ``arch``: its name in the registry (recorded in checkpoints);
* ``from_config(cfg, num_classes, embedding_dim=None)``: the module a training config asks for
  (``cfg`` is any object with the config's attributes; the class reads the ones it needs),
  class-conditional with ``num_classes``, conditioned on a vector per sample with
  ``embedding_dim`` (see ganx.models.common), unconditional with neither;
* ``cls(**m.config())`` rebuilds a module ``m`` (from a checkpoint, say).

Its instances (:class:`GeneratorModel` / :class:`DiscriminatorModel`) keep the arguments every
model takes (``image_size``, ``channels``, ``width``, ``num_classes``, ``embedding_dim``:
ganx.models.common.set_common), say whether they are ``conditional``, give their constructor
arguments as plain types (``config()``) and are called with the conditioning input as
``labels``: None (unconditional), (N,) int64 class indices or (N, E) float vectors. A generator
maps ``z`` (N, latent_dim) to images (N, channels, image_size, image_size) in [-1, 1]; a
discriminator maps such images to (N,) logits (or critic scores).

The Protocols are runtime-checkable, so ``isinstance`` checks that the names exist;
tests/test_models.py checks the rest (signatures, types, shapes) for every registry entry.
"""
from __future__ import annotations

from typing import Any, ClassVar, Dict, Optional, Protocol, runtime_checkable

import torch

__all__ = ["Model", "GeneratorModel", "DiscriminatorModel", "Architecture", "GeneratorArch", "DiscriminatorArch"]


@runtime_checkable
class Model(Protocol):
    """What an instance of any registered architecture has (besides being an ``nn.Module``)."""

    arch: ClassVar[str]
    image_size: int
    channels: int
    width: int
    num_classes: Optional[int]
    embedding_dim: Optional[int]

    @property
    def conditional(self) -> bool:
        """True for a class- or embedding-conditioned model."""
        ...

    def config(self) -> Dict[str, Any]:
        """Constructor arguments (plain types): ``type(self)(**self.config())`` rebuilds it."""
        ...


@runtime_checkable
class GeneratorModel(Model, Protocol):
    """A registered generator: ``G(z, labels)`` -> images in [-1, 1]."""

    latent_dim: int

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``z`` (N, latent_dim) -> (N, channels, image_size, image_size)."""
        ...


@runtime_checkable
class DiscriminatorModel(Model, Protocol):
    """A registered discriminator: ``D(x, labels)`` -> one logit (or critic score) per sample."""

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x`` (N, channels, image_size, image_size) -> (N,)."""
        ...


@runtime_checkable
class Architecture(Protocol):
    """A registry entry: the class itself (its name, and how configs and checkpoints build it)."""

    arch: str

    def from_config(self, cfg: Any, num_classes: Optional[int], embedding_dim: Optional[int] = None) -> Model:
        """The module of a training config (ganx.train.TrainConfig)."""
        ...

    def __call__(self, *args: Any, **kwargs: Any) -> Model:
        """The constructor: ``cls(**m.config())``."""
        ...


@runtime_checkable
class GeneratorArch(Architecture, Protocol):
    def from_config(self, cfg: Any, num_classes: Optional[int],
                    embedding_dim: Optional[int] = None) -> GeneratorModel: ...

    def __call__(self, *args: Any, **kwargs: Any) -> GeneratorModel: ...


@runtime_checkable
class DiscriminatorArch(Architecture, Protocol):
    def from_config(self, cfg: Any, num_classes: Optional[int],
                    embedding_dim: Optional[int] = None) -> DiscriminatorModel: ...

    def __call__(self, *args: Any, **kwargs: Any) -> DiscriminatorModel: ...
