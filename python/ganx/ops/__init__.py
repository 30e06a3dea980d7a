"""Fused ops (autograd + fake kernels over torch.ops.ganx) and their pure-torch references."""
from ganx.ops import reference  # noqa: F401
from ganx.ops.bce import (  # noqa: F401
    DiscriminatorStats, bce_discriminator_loss, bce_generator_loss, bce_with_logits, binary_cross_entropy,
    clear_cpu_buffer_cache, cpu_buffer_cache_stats)
from ganx.ops.conv_pool import box_filtered_weight, conv2d_avg_pool2d  # noqa: F401
from ganx.ops.critic import (  # noqa: F401
    CriticStats, hinge_discriminator_loss, hinge_generator_loss, wasserstein_discriminator_loss,
    wasserstein_generator_loss)
from ganx.ops.upsample_conv import (  # noqa: F401
    UPCONV_ALGORITHMS, conv_transpose2d_4s2, get_upconv_algorithm, set_upconv_algorithm, upconv_algorithm,
    upconv_algorithm_choices, upsample_conv2d)
