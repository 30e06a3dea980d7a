"""ganx modules: fused layers and losses."""
from ganx.nn.losses import BCELoss, BCEWithLogitsLoss, DiscriminatorBCELoss, GeneratorBCELoss  # noqa: F401
from ganx.nn.upsample_conv import FusedConvTranspose2d, UpsampleConv2d  # noqa: F401
