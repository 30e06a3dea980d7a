"""GAN models: a DCGAN-style Generator built on UpsampleConv2d, a strided-conv Discriminator, the
SNGAN-style ResNet pair (ganx.models.resnet), and the registry that names them (ganx.models.registry)."""
from ganx.models.discriminator import Discriminator  # noqa: F401
from ganx.models.generator import Generator  # noqa: F401
from ganx.models.resnet import ResNetDiscriminator, ResNetGenerator  # noqa: F401
from ganx.models.registry import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator  # noqa: F401

__all__ = ["Generator", "Discriminator", "ResNetGenerator", "ResNetDiscriminator", "GENERATORS", "DISCRIMINATORS", "build_generator", "build_discriminator"]
