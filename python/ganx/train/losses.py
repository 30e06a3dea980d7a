"""Adversarial losses behind one interface, so the trainer is the same code for both impls.

``impl="fused"`` calls ganx.functional's one-pass BCE kernels; ``impl="reference"`` computes
the same quantities with plain PyTorch. Both work on logits (BCE(l, t) is
``softplus(l) - l*t``, never ``log(sigmoid(l))``) and return the same statistics:

* D loss = mean BCE(real, real_target) + mean BCE(fake, fake_target)
* G loss: non-saturating = mean BCE(fake, target) = -log D(G(z));
  minimax = -mean BCE(fake, 0) = log(1 - D(G(z))) (G minimises it; it saturates early on)
* stats: acc_real = P(real logit > 0), acc_fake = P(fake logit <= 0), d_real = mean D(x),
  d_fake = mean D(G(z)), as 0-dim float tensors (no host sync until someone reads them).
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

__all__ = ["AdversarialLoss", "STAT_NAMES"]

STAT_NAMES = ("acc_real", "acc_fake", "d_real", "d_fake")


class AdversarialLoss:
    def __init__(self, impl: str = "fused", g_mode: str = "non_saturating", real_target: float = 1.0):
        if impl not in ("fused", "reference"):
            raise ValueError(f"AdversarialLoss: impl must be 'fused' or 'reference', got {impl!r}")
        if g_mode not in ("non_saturating", "minimax"):
            raise ValueError(f"AdversarialLoss: g_mode must be 'non_saturating' or 'minimax', got {g_mode!r}")
        self.impl, self.g_mode, self.real_target = impl, g_mode, float(real_target)
        if impl == "fused":
            from ganx import functional

            missing = [n for n in ("bce_discriminator_loss", "bce_generator_loss") if not hasattr(functional, n)]
            if missing:
                raise ImportError(f"impl='fused': ganx.functional has no {', '.join(missing)} in this build "
                                  f"of ganx; rebuild ganx or use impl='reference'")
            self._f = functional

    def d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        # Losses are computed in float32 whatever the autocast dtype of D's output.
        real_logits, fake_logits = real_logits.float(), fake_logits.float()
        if self.impl == "fused":
            loss, stats = self._f.bce_discriminator_loss(real_logits, fake_logits, real_target=self.real_target,
                                                         fake_target=0.0, return_stats=True)
            return loss, _stats_to_dict(stats)
        loss = (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, self.real_target))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
        with torch.no_grad():
            stats = {
                "acc_real": (real_logits > 0).float().mean(),
                "acc_fake": (fake_logits <= 0).float().mean(),
                "d_real": torch.sigmoid(real_logits).mean(),
                "d_fake": torch.sigmoid(fake_logits).mean(),
            }
        return loss, stats

    def g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        fake_logits = fake_logits.float()
        if self.impl == "fused":
            return self._f.bce_generator_loss(fake_logits, mode=self.g_mode)
        if self.g_mode == "non_saturating":
            return F.softplus(-fake_logits).mean()
        return -F.softplus(fake_logits).mean()


def _stats_to_dict(stats) -> Dict[str, torch.Tensor]:
    """Normalise the fused op's stats (a dict, a named tuple or a tensor) to our dict of names."""
    if isinstance(stats, dict):
        return {k: stats[k] for k in STAT_NAMES}
    if hasattr(stats, "_asdict"):
        return {k: v for k, v in stats._asdict().items() if k in STAT_NAMES}
    if isinstance(stats, torch.Tensor) and stats.numel() == 4:
        return dict(zip(STAT_NAMES, stats.unbind(0)))
    raise TypeError(f"unexpected stats from ganx.functional.bce_discriminator_loss: {type(stats).__name__}")
