"""ganx modules: fused layers and losses."""
from ganx.nn.upsample_conv import UpsampleConv2d  # noqa: F401
