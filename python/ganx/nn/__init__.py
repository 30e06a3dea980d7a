"""ganx modules: fused layers and losses."""
from ganx.nn.losses import (  # noqa: F401
    BCELoss, BCEWithLogitsLoss, DiscriminatorBCELoss, GeneratorBCELoss, HingeDiscriminatorLoss, HingeGeneratorLoss,
    WassersteinDiscriminatorLoss, WassersteinGeneratorLoss)
from ganx.nn.upsample_conv import FusedConvTranspose2d, UpsampleConv2d  # noqa: F401
