"""Fused critic losses for GANs: hinge and Wasserstein (WGAN), on D's raw scores.

Math, per element, on scores x (D's output with no sigmoid):

* hinge D (Lim & Ye 2017; SAGAN, BigGAN): ``red(relu(1 - real)) + red(relu(1 + fake))``;
  ``d / d real = -[1 - real > 0]``, ``d / d fake = [1 + fake > 0]`` (0 at the kink, like torch's relu)
* Wasserstein D (Arjovsky et al. 2017; D minimises): ``red(-real) + red(fake)`` = mean fake - mean real;
  ``d / d real = -1``, ``d / d fake = 1``
* G, both: ``red(-fake)`` = -mean fake; ``d / d fake = -1``

(each gradient divided by the input's numel for "mean"). The Wasserstein loss is only meaningful
with a Lipschitz constraint on D: a gradient penalty (R1, ``--r1-gamma``; WGAN-GP) or spectral
normalisation; without one the critic's scores grow without bound.

Each op (``torch.ops.ganx.critic_*``) runs the kernels of the BCE ops (csrc/cpu/bce_vec.cpp,
csrc/cuda/kernels/bce_loss.cuh) with another per-element function (csrc/bce_math.h critic_elem):
one pass reads the scores and writes the loss, ``d loss / d input`` and, for D, the statistics;
the backward only scales that saved gradient. NaN in gives NaN out (relu's gradient is 0 at the
kink and passes at a NaN score, exactly like torch's relu backward). Reductions follow torch: "mean" of an empty input is NaN, "sum" is 0.

Forward-mode AD (a tangent on an input) runs the pure-PyTorch twins (ganx.ops.reference);
double backward (``create_graph=True``) raises, as for the BCE ops.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple, Union

import torch
from torch import Tensor

from ganx import _ext  # noqa: F401  (registers torch.ops.ganx)
from ganx.ops import _fwad
from ganx.ops._checks import check_device
from ganx.ops import reference as _ref
from ganx.ops.bce import _check_fake_logits, _check_fake_reduction, _grad_like, _loss_like, _tensor, check_reduction

__all__ = ["CriticStats", "KINDS", "hinge_discriminator_loss", "hinge_generator_loss",
           "wasserstein_discriminator_loss", "wasserstein_generator_loss"]

KINDS = {"hinge": 1, "wasserstein": 2}  # csrc/bce_math.h LossKind

_ops = torch.ops.ganx
_DISC = _ops.critic_discriminator_loss.default
_GEN = _ops.critic_generator_loss.default


class CriticStats(NamedTuple):
    """What a trainer logs about a critic D, computed in the same pass as the loss.

    Each field is a 0-d float32 tensor on the scores' device (no host sync). A score > 0 counts
    as "real", a NaN score as "fake". The means are of the raw scores (not sigmoids: hinge and
    Wasserstein scores are margins, not log-odds); for Wasserstein, ``logit_real - logit_fake``
    is the critic's estimate of the distance. With an empty real (fake) input its fields are NaN.
    """

    acc_real: Tensor    # fraction of real scores > 0
    acc_fake: Tensor    # fraction of fake scores <= 0
    logit_real: Tensor  # mean real score
    logit_fake: Tensor  # mean fake score


def _discriminator(op: str, kind: str, real: Tensor, fake: Tensor, reduction: str, return_stats: bool):
    red = check_reduction(op, reduction)
    _tensor(op, "real_logits", real)
    _tensor(op, "fake_logits", fake)
    code = KINDS[kind]
    if _fwad.dual_level_active() and any(t is not None for t in _fwad.unpack((real, fake))[1]):
        fn = _ref.hinge_discriminator_loss if kind == "hinge" else _ref.wasserstein_discriminator_loss
        (r, f), _ = _fwad.unpack((real, fake))
        _check_fake_logits(op, r, f)
        check_device(op, "fake", f, "real", r)
        loss = fn(real, fake, reduction=reduction)
        if return_stats:
            return loss, CriticStats(*_ref.critic_stats(r.detach(), f.detach()).unbind(0))
        return loss
    need_grad = torch.is_grad_enabled() and (real.requires_grad or fake.requires_grad)
    loss, _, stats = _DISC(real, fake, code, red, need_grad)
    if red == 0:
        n = real.numel()
        loss = (loss[:n].view(real.shape), loss[n:].view(fake.shape))
    if return_stats:
        return loss, CriticStats(*stats.unbind(0))
    return loss


def _generator(op: str, kind: str, fake: Tensor, reduction: str) -> Tensor:
    red = check_reduction(op, reduction)
    _tensor(op, "fake_logits", fake)
    if _fwad.dual_level_active() and _fwad.unpack((fake,))[1][0] is not None:
        (f,), _ = _fwad.unpack((fake,))
        _check_fake_logits(op, f)
        return _ref.critic_generator_loss(fake, reduction=reduction)
    need_grad = torch.is_grad_enabled() and fake.requires_grad
    return _GEN(fake, KINDS[kind], red, need_grad)[0]


Loss = Union[Tensor, Tuple[Tensor, Tensor]]


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor, *, reduction: str = "mean",
                             return_stats: bool = False) -> Union[Loss, Tuple[Loss, CriticStats]]:
    """``red(relu(1 - real_logits)) + red(relu(1 + fake_logits))``, fused (one pass, one launch).

    Inputs as for :func:`ganx.functional.bce_discriminator_loss` (any shapes, same dtype and
    device; float32/float64, float16/bfloat16 computed in float32). reduction "mean" | "sum" |
    "none" (the pair ``(loss_real, loss_fake)`` of per-element losses). ``return_stats``: also a
    :class:`CriticStats`.
    """
    return _discriminator("hinge_discriminator_loss", "hinge", real_logits, fake_logits, reduction, return_stats)


def wasserstein_discriminator_loss(real_logits: Tensor, fake_logits: Tensor, *, reduction: str = "mean",
                                   return_stats: bool = False) -> Union[Loss, Tuple[Loss, CriticStats]]:
    """``red(fake_logits) - red(real_logits)`` (the WGAN critic's loss, minimised), fused.

    Needs a Lipschitz constraint on D (gradient penalty such as R1 / WGAN-GP, or spectral norm).
    Arguments and results as in :func:`hinge_discriminator_loss` ("none": ``(-real, fake)``).
    """
    return _discriminator("wasserstein_discriminator_loss", "wasserstein", real_logits, fake_logits, reduction,
                          return_stats)


def hinge_generator_loss(fake_logits: Tensor, *, reduction: str = "mean") -> Tensor:
    """G's hinge loss ``red(-fake_logits)`` = -mean D(G(z)), fused."""
    return _generator("hinge_generator_loss", "hinge", fake_logits, reduction)


def wasserstein_generator_loss(fake_logits: Tensor, *, reduction: str = "mean") -> Tensor:
    """G's Wasserstein loss ``red(-fake_logits)`` = -mean D(G(z)), fused (the hinge G loss's math)."""
    return _generator("wasserstein_generator_loss", "wasserstein", fake_logits, reduction)


# ----------------------------------------------------------------- fake kernels (shapes only)

def _check_fake_kind(op: str, kind: int) -> None:
    if kind not in (1, 2):  # csrc/bce_loss.cpp check_critic_kind
        raise ValueError(f"{op}: kind must be 1 (hinge) or 2 (wasserstein), got {kind}")


@torch.library.register_fake("ganx::critic_discriminator_loss")
def _disc_fake(real, fake, kind, reduction, need_grad):
    op = "critic_discriminator_loss"
    _check_fake_logits(op, real, fake)
    check_device(op, "fake", fake, "real", real)
    _check_fake_kind(op, kind)
    _check_fake_reduction(op, reduction)
    n = real.numel() + fake.numel()
    loss = real.new_empty((n,)) if reduction == 0 else real.new_empty(())
    return loss, real.new_empty((n if need_grad else 0,)), real.new_empty((4,), dtype=torch.float32)


@torch.library.register_fake("ganx::critic_generator_loss")
def _gen_fake(fake, kind, reduction, need_grad):
    op = "critic_generator_loss"
    _check_fake_logits(op, fake)
    _check_fake_kind(op, kind)
    _check_fake_reduction(op, reduction)
    return _loss_like(fake, reduction), _grad_like(fake, need_grad)
