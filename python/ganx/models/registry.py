"""Models by name: the architectures a training config (``generator`` / ``discriminator``) and a
checkpoint (``generator_arch`` / ``discriminator_arch``) can name.

Each entry is an ``nn.Module`` class meeting the contract of ganx.models.contract
(:class:`~ganx.models.contract.GeneratorArch` / :class:`~ganx.models.contract.DiscriminatorArch`):
an ``arch`` name (recorded in checkpoints), ``from_config(cfg, num_classes, embedding_dim=None)``
(the module a training config asks for) and ``config()`` on its instances, so that
``cls(**m.config())`` rebuilds one (from a checkpoint, say). tests/test_models.py checks every
entry against it.

Adding an architecture = one module under ganx/models and one line here.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ganx.models.contract import Architecture, DiscriminatorArch, DiscriminatorModel, GeneratorArch, GeneratorModel
from ganx.models.discriminator import Discriminator
from ganx.models.generator import Generator
from ganx.models.resnet import ResNetDiscriminator, ResNetGenerator

__all__ = ["GENERATORS", "DISCRIMINATORS", "generator_class", "discriminator_class", "build_generator",
           "build_discriminator", "checkpoint_config"]

GENERATORS: Dict[str, GeneratorArch] = {Generator.arch: Generator, ResNetGenerator.arch: ResNetGenerator}
DISCRIMINATORS: Dict[str, DiscriminatorArch] = {Discriminator.arch: Discriminator,
                                                 ResNetDiscriminator.arch: ResNetDiscriminator}


def _lookup(kind: str, table: Dict[str, Any], name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} architecture {name!r}; known: {', '.join(sorted(table))}") from None


def generator_class(name: str) -> GeneratorArch:
    return _lookup("generator", GENERATORS, name)


def discriminator_class(name: str) -> DiscriminatorArch:
    return _lookup("discriminator", DISCRIMINATORS, name)


def build_generator(name: str, config: Dict[str, Any]) -> GeneratorModel:
    """The generator ``name`` built from its constructor arguments ``config`` (``G.config()``)."""
    return generator_class(name)(**config)


def build_discriminator(name: str, config: Dict[str, Any]) -> DiscriminatorModel:
    """The discriminator ``name`` built from its constructor arguments ``config`` (``D.config()``)."""
    return discriminator_class(name)(**config)


def checkpoint_config(kind: str, ckpt: Dict[str, Any]) -> Optional[Tuple[Architecture, Dict[str, Any]]]:
    """``(class, constructor arguments)`` of the checkpoint's ``kind`` ("generator" or
    "discriminator"), or None when it records no config. Checkpoints of ganx 0.1.0 record no
    architecture name (they are all "dcgan") and an ``impl`` in the discriminator's config that
    D never used and no longer takes."""
    config = ckpt.get(f"{kind}_config")
    if config is None:
        return None
    name = ckpt.get(f"{kind}_arch")
    if not isinstance(config, dict):
        return _lookup(kind, GENERATORS if kind == "generator" else DISCRIMINATORS, name or "dcgan"), config
    config = dict(config)
    if name is None and kind == "discriminator":
        config.pop("impl", None)
    return _lookup(kind, GENERATORS if kind == "generator" else DISCRIMINATORS, name or "dcgan"), config
