"""Functional API of ganx's fused ops (see ganx.ops for the math of each)."""
from ganx.ops.bce import bce_discriminator_loss, bce_generator_loss, bce_with_logits, binary_cross_entropy  # noqa: F401
from ganx.ops.critic import (  # noqa: F401
    hinge_discriminator_loss, hinge_generator_loss, wasserstein_discriminator_loss, wasserstein_generator_loss)
from ganx.ops.conv_pool import conv2d_avg_pool2d  # noqa: F401
from ganx.ops.upsample_conv import conv_transpose2d_4s2, upsample_conv2d

__all__ = ["upsample_conv2d", "conv_transpose2d_4s2", "bce_discriminator_loss", "bce_generator_loss",
           "bce_with_logits", "binary_cross_entropy", "hinge_discriminator_loss", "hinge_generator_loss",
           "wasserstein_discriminator_loss", "wasserstein_generator_loss", "conv2d_avg_pool2d"]
