"""GAN models: a DCGAN-style Generator built on UpsampleConv2d and a strided-conv Discriminator."""
from ganx.models.discriminator import Discriminator  # noqa: F401
from ganx.models.generator import Generator  # noqa: F401

__all__ = ["Generator", "Discriminator"]
