"""ganx modules: fused layers and losses."""
from ganx.nn.upsample_conv import FusedConvTranspose2d, UpsampleConv2d  # noqa: F401
