"""Strided-convolution discriminator with optional spectral norm and projection conditioning."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from ganx.models.common import (Conditioned, check_discriminator_input, discriminator_config, projection_logit,
                                 set_common)

__all__ = ["Discriminator", "MinibatchStd"]


class MinibatchStd(nn.Module):
    """Appends one channel: the mean over features of the standard deviation across a small
    group of samples (Karras et al. 2018). A generator that ignores its noise produces groups
    with near-zero spread, which D can then see; without it a (conditional) DCGAN on the
    digits collapses to one image per class.

    Groups are *consecutive* samples (``group_size``, or the largest divisor of the batch not
    above it), so a batch made of a real half and a fake half of even size never mixes the two
    in one group: the trainer's single D pass over ``cat([real, fake])`` stays valid.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = int(group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = next(d for d in range(min(self.group_size, n), 0, -1) if n % d == 0)
        y = x.view(n // g, g, c, h, w)
        y = y if y.dtype == torch.float64 else y.float()  # half/bf16 statistics in float32, float64 kept
        # The biased variance over the group, two-pass. Not Tensor.var: its CPU kernel reduces a
        # middle dim of a few elements ~5x slower forward+backward (19 vs 4 ms at 128x128x4x4).
        var = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)
        std = (var + 1e-8).sqrt().mean(dim=(1, 2, 3))  # (n // g,)
        std = std.to(x.dtype).repeat_interleave(g).view(n, 1, 1, 1).expand(n, 1, h, w)
        return torch.cat([x, std], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}"


class Discriminator(Conditioned, nn.Module):
    """Maps an image in [-1, 1] to one logit per sample (``sigmoid(logit)`` = P(real)).

    ``log2(size/4)`` blocks of ``Conv2d(k=4, s=2, p=1) -> LeakyReLU(0.2)`` halve the image down
    to 4x4 while the channels double from ``width``; a final linear layer gives the logit.
    There is no BatchNorm: the trainer puts real and fake samples through D in one batch,
    which is only equivalent to two separate passes when no layer mixes real with fake.
    ``minibatch_std=k`` (default 4; 0 or 1 = off) adds a :class:`MinibatchStd` channel at
    4x4 computed over groups of k consecutive samples, against mode collapse.

    ``spectral_norm=True`` wraps every conv/linear in spectral normalisation (a Lipschitz
    bound that stabilises training, at one power iteration per forward).

    Conditioning (``num_classes`` set) is by projection (Miyato & Koyama 2018):
    ``logit = psi(h) + <embed(y), h>`` with ``h`` the pooled features, so the class enters
    as an inner product rather than as extra input channels. Conditioning on a vector per sample
    (``embedding_dim`` set; e.g. a text embedding) is the same projection with a linear map in
    place of the class lookup: ``logit = psi(h) + <W e, h>``, ``W`` an ``nn.Linear(embedding_dim,
    feat_dim, bias=False)`` (spectrally normalised with the rest under ``spectral_norm``).
    """

    arch = "dcgan"  # its name in ganx.models.registry

    def __init__(self, image_size: int = 32, channels: int = 1, width: int = 32, num_classes: Optional[int] = None,
                 spectral_norm: bool = False, minibatch_std: int = 4, embedding_dim: Optional[int] = None):
        super().__init__()
        set_common(self, image_size, channels, width, num_classes, embedding_dim)
        self.spectral_norm = bool(spectral_norm)
        self.minibatch_std = int(minibatch_std)
        sn = _sn if spectral_norm else (lambda m: m)

        n_blocks = (image_size // 4).bit_length() - 1
        layers = []
        c_in, c = channels, width
        for _ in range(n_blocks):
            layers += [sn(nn.Conv2d(c_in, c, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c_in, c = c, c * 2
        if self.minibatch_std > 1:
            layers.append(MinibatchStd(self.minibatch_std))
            c_in += 1
        self.features = nn.Sequential(*layers, nn.Flatten())
        feat_dim = c_in * 4 * 4
        self.feat_dim = feat_dim
        self.head = sn(nn.Linear(feat_dim, 1))
        self.embed = sn(nn.Embedding(num_classes, feat_dim)) if num_classes is not None else None
        if embedding_dim is not None:
            self.embed = sn(nn.Linear(self.embedding_dim, feat_dim, bias=False))
        self._init_weights()

    def _init_weights(self) -> None:
        # DCGAN initialisation (N(0, 0.02)); with spectral norm the scale is normalised away anyway.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
                nn.init.normal_(w, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
                nn.init.normal_(w, 0.0, 0.02)

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: (N, C, H, W); ``labels``: (N,) int64 for class-conditional models, (N, embedding_dim)
        float for embedding-conditioned ones. Returns (N,) logits."""
        check_discriminator_input("Discriminator", self, x, labels)
        return projection_logit(self, self.features(x), labels)

    @classmethod
    def from_config(cls, cfg, num_classes: Optional[int], embedding_dim: Optional[int] = None) -> "Discriminator":
        """The discriminator of a training config (ganx.train.TrainConfig)."""
        return cls(cfg.image_size, cfg.channels, cfg.d_width, num_classes, spectral_norm=cfg.spectral_norm,
                   minibatch_std=cfg.minibatch_std, embedding_dim=embedding_dim)

    def config(self) -> dict:
        """Constructor arguments (plain types) to rebuild this module, e.g. from a checkpoint
        (``embedding_dim`` only for an embedding-conditioned model)."""
        return discriminator_config(self)
