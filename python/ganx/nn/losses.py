"""Loss modules over ganx's fused loss kernels (see ganx.ops.bce and ganx.ops.critic for the math).

``DiscriminatorBCELoss`` / ``GeneratorBCELoss`` are the GAN losses on logits;
``HingeDiscriminatorLoss`` / ``HingeGeneratorLoss`` and ``WassersteinDiscriminatorLoss`` /
``WassersteinGeneratorLoss`` the critic losses on raw scores;
``BCEWithLogitsLoss`` / ``BCELoss`` are drop-ins for torch's modules (same constructor and call
signatures, same results). Every module takes ``impl="fused"`` (default, the ganx kernels) or
``impl="reference"`` (plain PyTorch, ganx.ops.reference), e.g. for higher-order gradients.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor, nn
from torch.nn import functional as F

from ganx.ops import bce as _fused
from ganx.ops import critic as _critic
from ganx.ops import reference as _ref
from ganx.ops._checks import check_impl

__all__ = ["DiscriminatorBCELoss", "GeneratorBCELoss", "BCEWithLogitsLoss", "BCELoss", "HingeDiscriminatorLoss",
           "HingeGeneratorLoss", "WassersteinDiscriminatorLoss", "WassersteinGeneratorLoss"]


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction
        return _reduction.legacy_get_string(size_average, reduce)
    return reduction


class DiscriminatorBCELoss(nn.Module):
    """``BCE(real_logits, real_target) + BCE(fake_logits, fake_target)``.

    ``forward(real_logits, fake_logits)`` returns the loss, or ``(loss, DiscriminatorStats)``
    with ``return_stats=True`` (the reference impl returns stats as a float32 tensor of the same
    four values). reduction "none" gives the pair ``(loss_real, loss_fake)``. real_target < 1 is
    one-sided label smoothing.
    """

    def __init__(self, real_target: float = 1.0, fake_target: float = 0.0, reduction: str = "mean",
                 return_stats: bool = False, *, impl: str = "fused"):
        super().__init__()
        name = type(self).__name__
        self.impl = check_impl(name, impl)
        self.real_target = _fused.check_target(name, "real_target", real_target)
        self.fake_target = _fused.check_target(name, "fake_target", fake_target)
        _fused.check_reduction(name, reduction)
        self.reduction = reduction
        self.return_stats = bool(return_stats)

    def forward(self, real_logits: Tensor, fake_logits: Tensor):
        fn = _fused.bce_discriminator_loss if self.impl == "fused" else _ref.bce_discriminator_loss
        return fn(real_logits, fake_logits, real_target=self.real_target, fake_target=self.fake_target,
                  reduction=self.reduction, return_stats=self.return_stats)

    def extra_repr(self) -> str:
        return (f"real_target={self.real_target}, fake_target={self.fake_target}, reduction={self.reduction!r}, "
                f"impl={self.impl!r}")


class GeneratorBCELoss(nn.Module):
    """G's adversarial loss on D's logits for generated samples.

    mode "non_saturating": ``BCE(fake, target)`` (= -log D(G(z))); "minimax":
    ``-BCE(fake, 1 - target)`` (= log(1 - D(G(z)))).
    """

    def __init__(self, mode: str = "non_saturating", target: float = 1.0, reduction: str = "mean", *,
                 impl: str = "fused"):
        super().__init__()
        name = type(self).__name__
        self.impl = check_impl(name, impl)
        if mode not in _fused.GENERATOR_MODES:
            raise ValueError(f"{name}: mode must be 'non_saturating' or 'minimax', got {mode!r}")
        self.mode = mode
        self.target = _fused.check_target(name, "target", target)
        _fused.check_reduction(name, reduction)
        self.reduction = reduction

    def forward(self, fake_logits: Tensor) -> Tensor:
        fn = _fused.bce_generator_loss if self.impl == "fused" else _ref.bce_generator_loss
        return fn(fake_logits, mode=self.mode, target=self.target, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, target={self.target}, reduction={self.reduction!r}, impl={self.impl!r}"


class _CriticDiscriminator(nn.Module):
    _kind = "?"

    def __init__(self, reduction: str = "mean", return_stats: bool = False, *, impl: str = "fused"):
        super().__init__()
        name = type(self).__name__
        self.impl = check_impl(name, impl)
        _fused.check_reduction(name, reduction)
        self.reduction = reduction
        self.return_stats = bool(return_stats)

    def forward(self, real_logits: Tensor, fake_logits: Tensor):
        fn = getattr(_critic if self.impl == "fused" else _ref, f"{self._kind}_discriminator_loss")
        return fn(real_logits, fake_logits, reduction=self.reduction, return_stats=self.return_stats)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, impl={self.impl!r}"


class _CriticGenerator(nn.Module):
    _kind = "?"

    def __init__(self, reduction: str = "mean", *, impl: str = "fused"):
        super().__init__()
        name = type(self).__name__
        self.impl = check_impl(name, impl)
        _fused.check_reduction(name, reduction)
        self.reduction = reduction

    def forward(self, fake_logits: Tensor) -> Tensor:
        fn = getattr(_critic if self.impl == "fused" else _ref, f"{self._kind}_generator_loss")
        return fn(fake_logits, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, impl={self.impl!r}"


class HingeDiscriminatorLoss(_CriticDiscriminator):
    """``mean relu(1 - real) + mean relu(1 + fake)`` on D's raw scores (SAGAN, BigGAN, SNGAN).

    ``forward(real_logits, fake_logits)`` returns the loss, or ``(loss, CriticStats)`` with
    ``return_stats=True`` (the reference impl: a float32 tensor of the same four values).
    reduction "none" gives the pair ``(loss_real, loss_fake)``.
    """

    _kind = "hinge"


class WassersteinDiscriminatorLoss(_CriticDiscriminator):
    """``mean fake - mean real`` (the WGAN critic's loss). D needs a Lipschitz constraint (a gradient
    penalty such as R1 / WGAN-GP, or spectral norm). Arguments as :class:`HingeDiscriminatorLoss`."""

    _kind = "wasserstein"


class HingeGeneratorLoss(_CriticGenerator):
    """G's hinge loss ``-mean D(G(z))`` on raw scores."""

    _kind = "hinge"


class WassersteinGeneratorLoss(_CriticGenerator):
    """G's Wasserstein loss ``-mean D(G(z))`` on raw scores (the same math as the hinge G loss)."""

    _kind = "wasserstein"


class _ElementwiseBCE(nn.Module):
    """What the two drop-ins share: torch's constructor arguments (with the legacy ``size_average``
    / ``reduce``), the ``weight`` buffer, and ``impl``."""

    def __init__(self, weight: Optional[Tensor], size_average, reduce, reduction: str, impl: str):
        super().__init__()
        name = type(self).__name__
        self.impl = check_impl(name, impl)
        self.reduction = _legacy_reduction(size_average, reduce, reduction)
        _fused.check_reduction(name, self.reduction)
        self.register_buffer("weight", weight)
        self.weight: Optional[Tensor]


class BCEWithLogitsLoss(_ElementwiseBCE):
    """Drop-in for ``torch.nn.BCEWithLogitsLoss`` (same arguments, buffers and results).

    weight and pos_weight broadcast to the input's shape; gradients reach input and target.
    """

    def __init__(self, weight: Optional[Tensor] = None, size_average=None, reduce=None, reduction: str = "mean",
                 pos_weight: Optional[Tensor] = None, *, impl: str = "fused"):
        super().__init__(weight, size_average, reduce, reduction, impl)
        self.register_buffer("pos_weight", pos_weight)
        self.pos_weight: Optional[Tensor]

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if self.impl == "fused":
            return _fused.bce_with_logits(input, target, self.weight, reduction=self.reduction,
                                          pos_weight=self.pos_weight)
        return _ref.bce_with_logits(input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight)


class BCELoss(_ElementwiseBCE):
    """Drop-in for ``torch.nn.BCELoss`` on probabilities (logs clamped at -100, like torch)."""

    def __init__(self, weight: Optional[Tensor] = None, size_average=None, reduce=None, reduction: str = "mean", *,
                 impl: str = "fused"):
        super().__init__(weight, size_average, reduce, reduction, impl)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if self.impl == "fused":
            return _fused.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)

