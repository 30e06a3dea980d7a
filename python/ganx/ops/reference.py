"""Pure-PyTorch oracles of every fused ganx op (imports only torch).

Each function is the definition the fused kernel must reproduce, written the plain way:
tests compare against these, and `impl="reference"` in the modules runs them.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["upsample_conv2d", "conv_transpose2d_4s2", "apply_activation", "ACTIVATION_FUNCTIONS",
           "ACTIVATION_MODULES", "ACTIVATION_CALLS", "ACTIVATION_METHODS", "ACTIVATION_DERIVATIVES",
           "bce_with_logits", "binary_cross_entropy", "bce_discriminator_loss", "bce_generator_loss",
           "discriminator_stats", "deconv_weight", "critic_stats", "hinge_discriminator_loss",
           "wasserstein_discriminator_loss", "critic_generator_loss", "hinge_generator_loss",
           "wasserstein_generator_loss", "conv2d_avg_pool2d"]


# The Python side of the C++ activation table (csrc/activation.h; names, enum, slope flag and
# what the backward reads come from there), paired with it in ganx/ops/activations.py, which
# builds every list, message and module mapping from these.
#
# The reference function of each fused activation: (pre-activation, negative_slope) -> output.
ACTIVATION_FUNCTIONS = {
    "none": lambda y, slope: y,
    "relu": lambda y, slope: F.relu(y),
    "leaky_relu": lambda y, slope: F.leaky_relu(y, slope),
    "tanh": lambda y, slope: torch.tanh(y),
    "silu": lambda y, slope: F.silu(y),
    "gelu": lambda y, slope: F.gelu(y, approximate="tanh"),
}

# The torch modules that are each activation: name -> (module class, m -> negative_slope, or a
# str saying why this instance is not that activation). ganx.fuse joins only these.
ACTIVATION_MODULES = {
    "relu": (torch.nn.ReLU, lambda m: 0.01),
    "leaky_relu": (torch.nn.LeakyReLU, lambda m: float(m.negative_slope)),
    "tanh": (torch.nn.Tanh, lambda m: 0.01),
    "silu": (torch.nn.SiLU, lambda m: 0.01),
    "gelu": (torch.nn.GELU, lambda m: 0.01 if m.approximate == "tanh" else
             f"GELU(approximate={m.approximate!r}) is the erf form; ganx fuses only the tanh form "
             "(approximate='tanh')"),
}

# The functional calls that are each activation (where fuse rewrites a traced graph): name ->
# (callables, their arguments after the input in positional order: name -> (default, the values
# that keep the call that activation, None: any)). The slope of leaky_relu is its negative_slope.
ACTIVATION_CALLS = {
    "relu": ((F.relu, torch.relu), {"inplace": (False, None)}),
    "leaky_relu": ((F.leaky_relu,), {"negative_slope": (0.01, None), "inplace": (False, None)}),
    "tanh": ((torch.tanh, F.tanh), {}),
    "silu": ((F.silu,), {"inplace": (False, None)}),
    "gelu": ((F.gelu,), {"approximate": ("none", ("tanh",))}),
}
# Tensor methods (x.relu(), ...) that are each activation.
ACTIVATION_METHODS = {"relu": ("relu", "relu_"), "tanh": ("tanh", "tanh_")}

# d act / d pre of the activations whose backward reads the pre-activation z (the table's
# ref 'x'): z -> act'(z), in differentiable torch ops (forward-mode AD multiplies tangents by it).
def _silu_derivative(z: torch.Tensor, slope: float) -> torch.Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


def _gelu_tanh_derivative(z: torch.Tensor, slope: float) -> torch.Tensor:
    beta, kappa = 0.7978845608028654, 0.044715  # sqrt(2 / pi)
    t = torch.tanh(beta * (z + kappa * z * z * z))
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * beta * (1 + 3 * kappa * z * z)


ACTIVATION_DERIVATIVES = {"silu": _silu_derivative, "gelu": _gelu_tanh_derivative}


def apply_activation(y: torch.Tensor, activation: Optional[str], negative_slope: float = 0.01) -> torch.Tensor:
    act = "none" if activation is None else activation
    if act not in ACTIVATION_FUNCTIONS:
        names = ", ".join(["None"] + [repr(n) for n in ACTIVATION_FUNCTIONS if n != "none"])
        raise ValueError(f"upsample_conv2d: activation must be one of {names}, got {activation!r}")
    return ACTIVATION_FUNCTIONS[act](y, negative_slope)


def upsample_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, scale_factor: int = 2,
                    padding: Optional[int] = None, activation: Optional[str] = None,
                    negative_slope: float = 0.01) -> torch.Tensor:
    """act(conv2d(interpolate(x, scale_factor, mode="nearest"), weight, bias, padding))."""
    if padding is None:
        padding = weight.shape[-1] // 2
    up = F.interpolate(x, scale_factor=scale_factor, mode="nearest")
    return apply_activation(F.conv2d(up, weight, bias, padding=padding), activation, negative_slope)


def conv2d_avg_pool2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                      padding: int = 0) -> torch.Tensor:
    """avg_pool2d(conv2d(x, weight, bias, padding=padding), 2): the discriminator block's tail."""
    return F.avg_pool2d(F.conv2d(x, weight, bias, padding=padding), 2)


def conv_transpose2d_4s2(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                         activation: Optional[str] = None, negative_slope: float = 0.01) -> torch.Tensor:
    """act(conv_transpose2d(x, weight (C_in, C_out, 4, 4), bias, stride=2, padding=1))."""
    return apply_activation(F.conv_transpose2d(x, weight, bias, stride=2, padding=1), activation, negative_slope)


def deconv_weight(weight: torch.Tensor) -> torch.Tensor:
    """3x3 conv weight (C_out, C_in, 3, 3) -> the (C_in, C_out, 4, 4) weight ``W4`` with
    ``conv_transpose2d(x, W4, stride=2, padding=1) == conv2d(interpolate(x, 2, "nearest"), weight,
    padding=1)``; the oracle of csrc's ``deconv_weight``.

    Output row 2i reads x rows i (tap 1) and i-1 (tap 3), row 2i+1 rows i (tap 2) and i+1 (tap 0);
    upsampling then the 3x3 conv gives row 2i = w0 x[i-1] + (w1 + w2) x[i] and row 2i+1 =
    (w0 + w1) x[i] + w2 x[i+1]: per axis ``[w2, w1 + w2, w0 + w1, w0]``, the two 2-tap phase
    kernels interleaved.
    """
    if weight.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError(f"deconv_weight: only 3x3 kernels fold to conv_transpose2d(4, 2, 1), got "
                         f"{tuple(weight.shape)}")

    def rows(w: torch.Tensor, d: int) -> torch.Tensor:
        k0, k1, k2 = w.unbind(d)
        return torch.stack([k2, k1 + k2, k0 + k1, k0], d)

    return rows(rows(weight, 2), 3).transpose(0, 1)


# ----------------------------------------------------------------- BCE adversarial losses

_REDUCTION_NAMES = ("none", "mean", "sum")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _bce_terms(logits: torch.Tensor, cpos, cneg) -> torch.Tensor:
    """cpos * softplus(-l) + cneg * softplus(l), stable, a zero coefficient dropping its term.

    softplus(+-l) = max(+-l, 0) + log1p(exp(-|l|)); dropping zero-coefficient terms first keeps
    BCE(+inf, 1) = 0 and BCE(-inf, 0) = 0 finite (0 * inf would be NaN).
    """
    cpos = torch.as_tensor(cpos, dtype=logits.dtype, device=logits.device)
    cneg = torch.as_tensor(cneg, dtype=logits.dtype, device=logits.device)
    zero = logits.new_zeros(())
    a = torch.where(cpos == 0, zero, cpos * torch.clamp(-logits, min=0))
    b = torch.where(cneg == 0, zero, cneg * torch.clamp(logits, min=0))
    return a + b + (cpos + cneg) * torch.log1p(torch.exp(-logits.abs()))


def bce_with_logits(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    *,
    reduction: str = "mean",
    pos_weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """weight * [pos_weight * t * softplus(-x) + (1 - t) * softplus(x)], reduced like torch.

    Equal to F.binary_cross_entropy_with_logits where that is finite, and finite at x = +-inf
    where the math is.
    """
    cpos = target if pos_weight is None else pos_weight * target
    loss = _bce_terms(input, cpos, 1 - target)
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)


def binary_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: Optional[torch.Tensor] = None,
    *,
    reduction: str = "mean",
) -> torch.Tensor:
    """BCE on probabilities, logs clamped at -100: torch's own definition."""
    return F.binary_cross_entropy(input, target, weight, reduction=reduction)


def discriminator_stats(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """float32 [acc_real, acc_fake, mean D(x), mean D(G(z))]; logit > 0 means "real"."""
    with torch.no_grad():
        r, f = real_logits.double(), fake_logits.double()
        return torch.stack([(r > 0).double().mean(), 1 - (f > 0).double().mean(),
                            torch.sigmoid(r).mean(), torch.sigmoid(f).mean()]).float()


def bce_discriminator_loss(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    *,
    real_target: float = 1.0,
    fake_target: float = 0.0,
    reduction: str = "mean",
    return_stats: bool = False,
):
    """BCE(real, real_target) + BCE(fake, fake_target) on logits (see ganx.ops.bce).

    reduction "none" returns the pair (loss_real, loss_fake); stats as a float32 tensor
    [acc_real, acc_fake, mean D(x), mean D(G(z))].
    """
    lr = _reduce(_bce_terms(real_logits, real_target, 1 - real_target), reduction)
    lf = _reduce(_bce_terms(fake_logits, fake_target, 1 - fake_target), reduction)
    loss = (lr, lf) if reduction == "none" else lr + lf
    if return_stats:
        return loss, discriminator_stats(real_logits, fake_logits)
    return loss


def bce_generator_loss(
    fake_logits: torch.Tensor,
    *,
    mode: str = "non_saturating",
    target: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """non_saturating: BCE(fake, target) (= -log D(G(z)) for target 1);
    minimax: -BCE(fake, 1 - target) (= log(1 - D(G(z))) for target 1)."""
    if mode == "non_saturating":
        return _reduce(_bce_terms(fake_logits, target, 1 - target), reduction)
    if mode == "minimax":
        return -_reduce(_bce_terms(fake_logits, 1 - target, target), reduction)
    raise ValueError(f"bce_generator_loss: mode must be 'non_saturating' or 'minimax', got {mode!r}")


# ----------------------------------------------------------------- critic losses (hinge, Wasserstein)

def critic_stats(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """float32 [acc_real, acc_fake, mean real score, mean fake score]; score > 0 means "real"."""
    with torch.no_grad():
        r, f = real_logits.double(), fake_logits.double()
        return torch.stack([(r > 0).double().mean(), 1 - (f > 0).double().mean(), r.mean(), f.mean()]).float()


def _critic_d(lr: torch.Tensor, lf: torch.Tensor, real_logits, fake_logits, reduction: str, return_stats: bool):
    lr, lf = _reduce(lr, reduction), _reduce(lf, reduction)
    loss = (lr, lf) if reduction == "none" else lr + lf
    if return_stats:
        return loss, critic_stats(real_logits, fake_logits)
    return loss


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, *, reduction: str = "mean",
                             return_stats: bool = False):
    """red(relu(1 - real)) + red(relu(1 + fake)) (see ganx.ops.critic); "none": the pair."""
    return _critic_d(F.relu(1 - real_logits), F.relu(1 + fake_logits), real_logits, fake_logits, reduction,
                     return_stats)


def wasserstein_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, *,
                                   reduction: str = "mean", return_stats: bool = False):
    """red(-real) + red(fake) = mean fake - mean real (the critic minimises it); "none": the pair."""
    return _critic_d(-real_logits, fake_logits, real_logits, fake_logits, reduction, return_stats)


def critic_generator_loss(fake_logits: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """red(-fake): G's hinge and Wasserstein loss."""
    return _reduce(-fake_logits, reduction)


hinge_generator_loss = critic_generator_loss
wasserstein_generator_loss = critic_generator_loss
