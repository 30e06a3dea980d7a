"""The GAN losses of the trainer: one object per loss, chosen by name (``--loss``), plus the R1
penalty (``--r1-gamma``) on top of any of them.

A loss owns both updates' objectives and the figures they report:

* ``d_step(D, real, fake, labels) -> (loss, stats)``: D's objective for one update. It gets D
  itself and the images (``fake`` already detached), so a loss that needs more than the logits
  of one pass (a gradient penalty) can have it. ``stats`` maps each name of :attr:`stats` to a
  0-dim tensor (no host sync until someone reads it).
* ``g_step(D, fake, labels) -> loss``: G's objective on images that carry G's graph (D frozen).
* :attr:`stats`: the D figures, name -> label in the plot; the trainer logs, plots and prints
  ``d_loss``, ``g_loss`` and these.

Most losses only look at logits: they subclass :class:`LogitLoss` and write ``d_loss`` /
``g_loss`` on logits. D is called as ``D(x)`` when the run is unconditional (``labels`` None) and
``D(x, labels)`` otherwise, so any unconditional D works as it is (``forward(self, x)``). Adding a loss = one class here and one line in :data:`LOSSES`; the
training loop does not change.

* ``bce`` (default): D: ``BCE(real, real_target) + BCE(fake, 0)``; G: non-saturating
  ``-log D(G(z))`` or minimax ``log(1 - D(G(z)))``. ``impl="fused"`` runs ganx's one-pass kernels
  (ganx.ops.bce), ``impl="reference"`` their pure-PyTorch twins (ganx.ops.reference).
* ``hinge`` (Lim & Ye 2017; SAGAN, BigGAN): D: ``mean relu(1 - real) + mean relu(1 + fake)``;
  G: ``-mean fake``. ``impl="fused"``: ganx's one-pass kernels (ganx.ops.critic).
* ``wgan`` (Arjovsky et al. 2017): D (the critic) minimises ``mean fake - mean real``; G:
  ``-mean fake``. It needs a Lipschitz constraint on D, or the critic's scores grow without bound:
  a gradient penalty (``--r1-gamma``, below) or spectral normalisation (``--spectral-norm``).
* :class:`R1Penalty` (Mescheder et al. 2018; StyleGAN's default regulariser): adds
  ``gamma / 2 * E ||grad_x D(x)||^2`` on real images to any loss's D objective (a double
  backward through D only).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from ganx.ops import bce as _fused_bce
from ganx.ops import critic as _fused_critic
from ganx.ops import reference as _reference
from ganx.ops._checks import check_impl

__all__ = ["GANLoss", "LogitLoss", "BCELoss", "HingeLoss", "WGANLoss", "R1Penalty", "LOSSES", "build_loss",
           "discriminate", "call_d"]

Stats = Dict[str, Tensor]


def call_d(D, x: Tensor, labels: Optional[Tensor]) -> Tensor:
    """``D(x)`` for an unconditional run (``labels`` None), ``D(x, labels)`` otherwise: a user's D
    whose forward takes no labels works as it is."""
    return D(x) if labels is None else D(x, labels)


def discriminate(D, real: Tensor, fake: Tensor, labels: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """D's logits on the real and the generated batch, in one pass over ``cat([real, fake])``
    (valid because D has no layer that mixes samples across its real and fake halves)."""
    n = real.shape[0]
    both_y = torch.cat([labels, labels]) if labels is not None else None
    logits = call_d(D, torch.cat([real, fake.to(real.dtype)]), both_y)
    return logits[:n], logits[n:]


class GANLoss:
    """The interface the trainer calls (see the module docstring)."""

    name = "?"
    stats: Dict[str, str] = {}

    def d_step(self, D, real: Tensor, fake: Tensor, labels: Optional[Tensor]) -> Tuple[Tensor, Stats]:
        raise NotImplementedError

    def g_step(self, D, fake: Tensor, labels: Optional[Tensor]) -> Tensor:
        raise NotImplementedError

    @property
    def figures(self) -> Tuple[str, ...]:
        """Everything a step reports: the two losses, then the D statistics."""
        return ("d_loss", "g_loss", *self.stats)

    @classmethod
    def from_config(cls, cfg) -> "GANLoss":
        return cls()


class LogitLoss(GANLoss):
    """A loss that needs only D's logits: one D pass per update, losses in float32 whatever the
    autocast dtype of D's output."""

    def d_loss(self, real_logits: Tensor, fake_logits: Tensor) -> Tuple[Tensor, Stats]:
        raise NotImplementedError

    def g_loss(self, fake_logits: Tensor) -> Tensor:
        raise NotImplementedError

    def d_step(self, D, real, fake, labels):
        real_logits, fake_logits = discriminate(D, real, fake, labels)
        return self.d_loss(real_logits.float(), fake_logits.float())

    def g_step(self, D, fake, labels):
        return self.g_loss(call_d(D, fake, labels).float())


class BCELoss(LogitLoss):
    """The classic GAN losses on logits (the math is in ganx.ops.bce). Stats: D's accuracy on
    real and on fake (a logit > 0 reads "real"), mean D(x) and mean D(G(z)) (sigmoids)."""

    name = "bce"
    stats = {"acc_real": "D accuracy, real", "acc_fake": "D accuracy, fake", "d_real": "mean D(x)",
             "d_fake": "mean D(G(z))"}

    def __init__(self, impl: str = "fused", g_mode: str = "non_saturating", real_target: float = 1.0):
        check_impl("BCELoss", impl)
        if g_mode not in _fused_bce.GENERATOR_MODES:
            raise ValueError(f"BCELoss: g_mode must be 'non_saturating' or 'minimax', got {g_mode!r}")
        self.impl, self.g_mode, self.real_target = impl, g_mode, float(real_target)
        # The fused ops and their reference twins have the same signatures.
        self._ops = _fused_bce if impl == "fused" else _reference

    @classmethod
    def from_config(cls, cfg) -> "BCELoss":
        return cls(cfg.impl, cfg.g_loss, cfg.real_target)

    def d_loss(self, real_logits, fake_logits):
        loss, stats = self._ops.bce_discriminator_loss(real_logits, fake_logits, real_target=self.real_target,
                                                       return_stats=True)
        # A DiscriminatorStats (fused) or a 4-vector (reference): both iterate in this order.
        return loss, dict(zip(self.stats, stats))

    def g_loss(self, fake_logits):
        return self._ops.bce_generator_loss(fake_logits, mode=self.g_mode)


class _CriticLoss(LogitLoss):
    """The critic losses on raw scores (the math is in ganx.ops.critic). Stats: D's accuracy on
    real and on fake (a score > 0 reads "real") and its mean raw scores (not probabilities: these
    scores are margins, not log-odds). ``impl="fused"`` runs ganx's one-pass kernels,
    ``impl="reference"`` their pure-PyTorch twins (ganx.ops.reference)."""

    kind = "?"
    stats = {"acc_real": "D accuracy, real", "acc_fake": "D accuracy, fake", "logit_real": "mean logit, real",
             "logit_fake": "mean logit, fake"}

    def __init__(self, impl: str = "fused"):
        self.impl = check_impl(type(self).__name__, impl)
        ops = _fused_critic if impl == "fused" else _reference
        self._d = getattr(ops, f"{self.kind}_discriminator_loss")
        self._g = getattr(ops, f"{self.kind}_generator_loss")

    @classmethod
    def from_config(cls, cfg) -> "_CriticLoss":
        return cls(cfg.impl)

    def d_loss(self, real_logits, fake_logits):
        loss, stats = self._d(real_logits, fake_logits, return_stats=True)
        # A CriticStats (fused) or a 4-vector (reference): both iterate in this order.
        return loss, dict(zip(self.stats, stats))

    def g_loss(self, fake_logits):
        return self._g(fake_logits)


class HingeLoss(_CriticLoss):
    """Hinge loss: D: ``mean relu(1 - real) + mean relu(1 + fake)``, G: ``-mean fake``."""

    name = "hinge"
    kind = "hinge"


class WGANLoss(_CriticLoss):
    """Wasserstein loss: D (the critic) minimises ``mean fake - mean real``, G: ``-mean fake``.
    D needs a Lipschitz constraint: ``--r1-gamma`` (a gradient penalty) or ``--spectral-norm``."""

    name = "wgan"
    kind = "wasserstein"


class R1Penalty(GANLoss):
    """``base``'s objectives, plus ``gamma / 2 * E_x ||grad_x D(x)||^2`` over the real batch in
    D's objective (R1, Mescheder et al. 2018). The gradient comes from the same D pass as the
    base loss's logits (``create_graph=True``), so the update backpropagates through it: a double
    backward through D only (G's images are detached in the D step). Adds the stat ``r1`` (the
    unscaled mean squared gradient norm)."""

    name = "r1"

    def __init__(self, base: LogitLoss, gamma: float):
        if not isinstance(base, LogitLoss):
            raise TypeError(f"R1Penalty: the base loss must work on logits, got {type(base).__name__}")
        if not gamma > 0:
            raise ValueError(f"R1Penalty: gamma must be > 0, got {gamma}")
        self.base, self.gamma = base, float(gamma)
        self.stats = {**base.stats, "r1": "R1: mean ||grad D(x)||^2"}

    def penalty(self, real: Tensor, real_logits: Tensor) -> Tensor:
        """Mean over the batch of ``||d sum(D(x)) / dx_i||^2`` (``real`` must require grad)."""
        (g,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
        return g.float().square().flatten(1).sum(1).mean()

    def d_step(self, D, real, fake, labels):
        real = real.detach().requires_grad_(True)
        real_logits, fake_logits = discriminate(D, real, fake, labels)
        loss, stats = self.base.d_loss(real_logits.float(), fake_logits.float())
        r1 = self.penalty(real, real_logits)
        return loss + (self.gamma / 2) * r1, {**stats, "r1": r1.detach()}

    def g_step(self, D, fake, labels):
        return self.base.g_step(D, fake, labels)


LOSSES = {"bce": BCELoss, "hinge": HingeLoss, "wgan": WGANLoss}


def build_loss(cfg) -> GANLoss:
    """The loss a config asks for: ``LOSSES[cfg.loss]``, wrapped in :class:`R1Penalty` when
    ``cfg.r1_gamma > 0``."""
    loss = LOSSES[cfg.loss].from_config(cfg)
    if cfg.r1_gamma > 0:
        loss = R1Penalty(loss, cfg.r1_gamma)
    return loss
