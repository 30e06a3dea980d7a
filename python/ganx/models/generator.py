"""DCGAN-style generator whose upsampling layers are ganx's fused UpsampleConv2d."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ganx.models.common import IMAGE_SIZES, Conditioned, check_generator_input, set_common
from ganx.nn.upsample_conv import UpsampleConv2d
from ganx.ops._checks import check_impl

__all__ = ["Generator", "IMAGE_SIZES"]

_BASE = 4  # spatial size after the linear projection; every block doubles it


class Generator(Conditioned, nn.Module):
    """Maps a Gaussian latent ``z`` (and optionally a class label or an embedding) to an image in [-1, 1].

    Architecture (DCGAN): ``z -> Linear -> (C0, 4, 4) -> BN -> ReLU``, then ``log2(size/4)``
    upsampling blocks. Every block but the last is ``UpsampleConv2d(bias=False) -> BN -> ReLU``
    (the conv bias would be cancelled by BN, so it is left out); the last block is an
    ``UpsampleConv2d`` straight to the image channels with the ``tanh`` fused into its
    epilogue. Channels halve at every block, from ``width * 2**(blocks-1)`` down to ``width``.

    Conditioning: with ``num_classes`` set, the label goes in *with the noise*: an
    ``nn.Embedding(num_classes, embed_dim)`` is concatenated to ``z`` before the projection,
    so ``G(z, y)`` draws an image of class ``y``. With ``embedding_dim`` set instead, ``y`` is a
    vector per sample (N, embedding_dim), e.g. a text embedding, and its learned linear projection
    ``nn.Linear(embedding_dim, embed_dim)`` takes the class embedding's place (Reed et al. 2016);
    the projection starts as N(0, 1/embedding_dim), so vectors of unit-variance values give features
    of the noise's scale.

    ``impl="reference"`` swaps the fused upsample+conv for ``nn.Upsample`` + ``nn.Conv2d``
    (same parameters, same state_dict), for comparison and debugging.
    """

    arch = "dcgan"  # its name in ganx.models.registry

    def __init__(self, latent_dim: int = 64, image_size: int = 32, channels: int = 1, width: int = 32,
                 num_classes: Optional[int] = None, embed_dim: Optional[int] = None, impl: str = "fused",
                 embedding_dim: Optional[int] = None):
        super().__init__()
        set_common(self, image_size, channels, width, num_classes, embedding_dim)
        check_impl("Generator", impl)
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.latent_dim = int(latent_dim)
        self.impl = impl
        n_blocks = (image_size // _BASE).bit_length() - 1  # log2(size / 4)
        c0 = width * 2 ** (n_blocks - 1)

        in_dim = latent_dim
        if num_classes is not None:
            self.embed_dim = int(embed_dim or latent_dim)
            self.embed = nn.Embedding(num_classes, self.embed_dim)
            in_dim += self.embed_dim
        elif embedding_dim is not None:
            self.embed_dim = int(embed_dim or latent_dim)
            self.embed = nn.Linear(self.embedding_dim, self.embed_dim)
            in_dim += self.embed_dim
        else:
            self.embed_dim = 0
            self.embed = None

        self.project = nn.Sequential(
            nn.Linear(in_dim, c0 * _BASE * _BASE, bias=False),
            nn.Unflatten(1, (c0, _BASE, _BASE)),
            nn.BatchNorm2d(c0),
            nn.ReLU(inplace=True),
        )
        blocks = []
        c = c0
        for _ in range(n_blocks - 1):
            blocks += [
                UpsampleConv2d(c, c // 2, 3, 2, bias=False, impl=impl),
                nn.BatchNorm2d(c // 2),
                nn.ReLU(inplace=True),
            ]
            c //= 2
        blocks.append(UpsampleConv2d(c, channels, 3, 2, bias=True, activation="tanh", impl=impl))
        self.blocks = nn.Sequential(*blocks)
        self._init_weights()

    def _init_weights(self) -> None:
        # DCGAN initialisation: N(0, 0.02) weights, BN gamma ~ N(1, 0.02). It keeps the early
        # generator output in tanh's linear range, which matters for the first few hundred steps.
        for m in self.modules():
            if isinstance(m, (UpsampleConv2d, nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 1.0)
        if self.embedding_dim is not None:
            nn.init.normal_(self.embed.weight, 0.0, self.embedding_dim ** -0.5)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``z``: (N, latent_dim); ``labels``: (N,) int64 class indices (class-conditional models) or
        (N, embedding_dim) float vectors (embedding-conditioned models)."""
        check_generator_input("Generator", self, z, labels)
        if self.embedding_dim is not None:
            z = torch.cat([z, self.embed(labels.to(z.dtype))], dim=1)
        elif self.conditional:
            z = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)
        return self.blocks(self.project(z))

    @classmethod
    def from_config(cls, cfg, num_classes: Optional[int], embedding_dim: Optional[int] = None) -> "Generator":
        """The generator of a training config (ganx.train.TrainConfig)."""
        return cls(cfg.latent_dim, cfg.image_size, cfg.channels, cfg.g_width, num_classes, impl=cfg.impl,
                   embedding_dim=embedding_dim)

    def config(self) -> dict:
        """Constructor arguments (plain types) to rebuild this module, e.g. from a checkpoint
        (``embedding_dim`` only for an embedding-conditioned model, so the configs of the others
        are those of earlier ganx versions)."""
        cfg = {"latent_dim": self.latent_dim, "image_size": self.image_size, "channels": self.channels,
               "width": self.width, "num_classes": self.num_classes,
               "embed_dim": self.embed_dim or None, "impl": self.impl}
        if self.embedding_dim is not None:
            cfg["embedding_dim"] = self.embedding_dim
        return cfg
