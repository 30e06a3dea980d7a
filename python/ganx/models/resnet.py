"""SNGAN-style ResNet generator and discriminator (Miyato et al. 2018; projection conditioning,
Miyato & Koyama 2018). The generator's upsampling paths are ganx's fused UpsampleConv2d."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

from ganx.models.common import (Conditioned, check_discriminator_input, check_generator_input, discriminator_config,
                                 latents, projection_logit, set_common)
from ganx.models.discriminator import MinibatchStd
from ganx.nn.upsample_conv import UpsampleConv2d
from ganx.ops._checks import check_impl
from ganx.ops.conv_pool import conv2d_avg_pool2d

__all__ = ["ResNetGenerator", "ResNetDiscriminator", "ConditionalBatchNorm2d", "UpBlock", "DownBlock"]

_BASE = 4  # spatial size after the generator's linear projection / of the discriminator's last blocks


def _blocks(image_size: int) -> int:
    return (image_size // _BASE).bit_length() - 1  # log2(size / 4)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm2d whose gain and bias are looked up per sample from its class (de Vries et al.
    2017, as in SNGAN / BigGAN): ``gain[y] * bn(x) + bias[y]``, the gains initialised to 1 and the
    biases to 0. With ``num_classes=None`` it is a plain affine ``nn.BatchNorm2d`` (then ``y`` must
    be None).

    With ``embedding_dim`` instead, ``y`` is a vector per sample (N, embedding_dim) and the gain and
    bias are linear functions of it (BigGAN's form): ``(1 + W_g y + b_g) * bn(x) + W_b y + b_b``;
    ``W`` and ``b`` start at 0, so every vector starts at gain 1 and bias 0 like the classes."""

    def __init__(self, num_features: int, num_classes: Optional[int] = None, embedding_dim: Optional[int] = None):
        super().__init__()
        if num_classes is not None and embedding_dim is not None:
            raise ValueError("ConditionalBatchNorm2d: num_classes or embedding_dim, not both")
        self.num_features, self.num_classes, self.embedding_dim = int(num_features), num_classes, embedding_dim
        self.bn = nn.BatchNorm2d(num_features, affine=num_classes is None and embedding_dim is None)
        if num_classes is not None:
            self.gain = nn.Embedding(num_classes, num_features)
            self.bias = nn.Embedding(num_classes, num_features)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)
        elif embedding_dim is not None:
            self.gain = nn.Linear(embedding_dim, num_features)
            self.bias = nn.Linear(embedding_dim, num_features)
            for m in (self.gain, self.bias):
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        else:
            self.gain = self.bias = None

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.bn(x)
        if self.gain is None:
            return h
        if self.embedding_dim is not None:
            y = y.to(h.dtype)
            return h * (1 + self.gain(y))[:, :, None, None] + self.bias(y)[:, :, None, None]
        g = self.gain(y).to(h.dtype)[:, :, None, None]
        b = self.bias(y).to(h.dtype)[:, :, None, None]
        return h * g + b

    def extra_repr(self) -> str:
        if self.embedding_dim is not None:
            return f"{self.num_features}, embedding_dim={self.embedding_dim}"
        return f"{self.num_features}, num_classes={self.num_classes}"


class UpBlock(nn.Module):
    """``x -> BN -> ReLU -> up2 + conv3x3 -> BN -> ReLU -> conv3x3``, plus the shortcut
    ``up2 + conv1x1`` (BN conditional when ``num_classes`` is set). Both upsampling paths are one
    fused :class:`~ganx.nn.UpsampleConv2d` each (nearest x2 then the conv, without building the
    upsampled tensor); ``impl="reference"`` makes them ``F.interpolate`` + ``F.conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, num_classes: Optional[int] = None, impl: str = "fused",
                 embedding_dim: Optional[int] = None):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_channels, num_classes, embedding_dim)
        self.conv1 = UpsampleConv2d(in_channels, out_channels, 3, 2, impl=impl)
        self.bn2 = ConditionalBatchNorm2d(out_channels, num_classes, embedding_dim)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = UpsampleConv2d(in_channels, out_channels, 1, 2, impl=impl)

    def forward(self, x: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv1(F.relu(self.bn1(x, y)))
        h = self.conv2(F.relu(self.bn2(h, y)))
        return h + self.shortcut(x)


class ResNetGenerator(Conditioned, nn.Module):
    """Maps a Gaussian latent ``z`` (and optionally a class label) to an image in [-1, 1].

    Architecture (SNGAN's ResNet generator): ``z -> Linear -> (C0, 4, 4)``, then ``log2(size/4)``
    :class:`UpBlock` s (each doubles the resolution), then ``BN -> ReLU -> conv3x3 -> tanh``.
    Channels halve at every block from ``C0 = width * 2**(blocks-1)`` at 4x4; the last block keeps
    ``width`` (at 32 px and width 32: 128 -> 64 -> 32 -> 32).

    Conditioning (``num_classes`` set): the BatchNorms of the blocks are class-conditional
    (:class:`ConditionalBatchNorm2d`); the final BN is not (as in SNGAN). With ``embedding_dim``
    set instead, the input vector (N, embedding_dim) goes through one shared linear projection
    ``embed`` to ``embed_dim`` values (default ``latent_dim``; BigGAN's shared embedding), whose
    linear functions are the gains and biases of every block's BatchNorms.

    ``impl="reference"`` swaps every fused upsample+conv for ``F.interpolate`` + ``F.conv2d``
    (same parameters, same state_dict): the pure-PyTorch twin the tests compare with.
    """

    arch = "resnet"  # its name in ganx.models.registry

    def __init__(self, latent_dim: int = 64, image_size: int = 32, channels: int = 1, width: int = 32,
                 num_classes: Optional[int] = None, impl: str = "fused", embedding_dim: Optional[int] = None,
                 embed_dim: Optional[int] = None):
        super().__init__()
        set_common(self, image_size, channels, width, num_classes, embedding_dim)
        check_impl("ResNetGenerator", impl)
        if latent_dim < 1:
            raise ValueError(f"ResNetGenerator: latent_dim must be >= 1, got {latent_dim}")
        if embed_dim is not None and (embedding_dim is None or embed_dim < 1):
            raise ValueError(f"ResNetGenerator: embed_dim (the shared projection of an embedding) needs embedding_dim "
                             f"and must be >= 1, got embed_dim={embed_dim}, embedding_dim={embedding_dim}")
        self.latent_dim, self.impl = int(latent_dim), impl
        n = _blocks(image_size)
        chans = [width * 2 ** max(n - 1 - i, 0) for i in range(n + 1)]  # C0 .. C_n (the last = width)
        self.c0 = chans[0]
        self.project = nn.Linear(latent_dim, chans[0] * _BASE * _BASE)
        shared = None
        if embedding_dim is not None:
            self.embed_dim = int(embed_dim or latent_dim)
            self.embed = nn.Linear(self.embedding_dim, self.embed_dim)
            shared = self.embed_dim
        self.blocks = nn.ModuleList(UpBlock(chans[i], chans[i + 1], num_classes, impl, shared) for i in range(n))
        self.bn = nn.BatchNorm2d(chans[-1])
        self.to_image = nn.Conv2d(chans[-1], channels, 3, padding=1)
        self._init_weights()

    def _init_weights(self) -> None:
        # SNGAN's initialisation: Xavier-uniform, gain sqrt(2) in the residual paths (ReLU before
        # each conv), gain 1 for the shortcuts, the projection and the output conv; zero biases.
        # (The conditional BatchNorms' gain and bias maps keep their own initialisation: gain 1, bias 0.)
        for name, m in self.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, UpsampleConv2d)) and not name.endswith((".gain", ".bias")):
                residual = name.endswith(("conv1", "conv2"))
                nn.init.xavier_uniform_(m.weight, math.sqrt(2) if residual else 1.0)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``z``: (N, latent_dim); ``labels``: (N,) int64 class indices (class-conditional models) or
        (N, embedding_dim) float vectors (embedding-conditioned models)."""
        check_generator_input("ResNetGenerator", self, z, labels)
        if self.embedding_dim is not None:
            labels = self.embed(labels.to(z.dtype))  # the shared embedding every block's BatchNorms read
        h = self.project(z).view(z.shape[0], self.c0, _BASE, _BASE)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.to_image(F.relu(self.bn(h))))

    def sample_latent(self, n: int, generator: Optional[torch.Generator] = None, device=None) -> torch.Tensor:
        """n standard-normal latents, drawn on the CPU (so a seed gives the same z on any device)."""
        return latents(n, self.latent_dim, generator, device)

    @classmethod
    def from_config(cls, cfg, num_classes: Optional[int], embedding_dim: Optional[int] = None) -> "ResNetGenerator":
        """The generator of a training config (ganx.train.TrainConfig)."""
        return cls(cfg.latent_dim, cfg.image_size, cfg.channels, cfg.g_width, num_classes, impl=cfg.impl,
                   embedding_dim=embedding_dim)

    def config(self) -> dict:
        """Constructor arguments (plain types) to rebuild this module, e.g. from a checkpoint
        (``embedding_dim`` and ``embed_dim`` only for an embedding-conditioned model)."""
        cfg = {"latent_dim": self.latent_dim, "image_size": self.image_size, "channels": self.channels,
               "width": self.width, "num_classes": self.num_classes, "impl": self.impl}
        if self.embedding_dim is not None:
            cfg.update(embedding_dim=self.embedding_dim, embed_dim=self.embed_dim)
        return cfg


class DownBlock(nn.Module):
    """``x -> ReLU -> conv3x3 -> ReLU -> conv3x3 -> avgpool2``, plus the shortcut
    ``conv1x1 -> avgpool2``; every weight spectrally normalised when ``spectral_norm``.

    ``optimized=True`` is SNGAN's first block, which sees the image itself: no ReLU before its
    first conv. The shortcut pools *before* its 1x1 conv (the two commute: both are linear and act
    on different axes; pooling first is 4x fewer multiply-adds).

    ``impl="fused"`` runs ``conv3x3 -> avgpool2`` as one stride-2 4x4 convolution on the
    box-filtered (spectrally normalised) weight (:func:`ganx.ops.conv2d_avg_pool2d`: 2.25x fewer
    multiply-adds, no full-resolution output, no pool); ``impl="reference"`` runs the two layers.
    The parameters and the state dict are the same either way."""

    def __init__(self, in_channels: int, out_channels: int, optimized: bool = False, spectral_norm: bool = True,
                 impl: str = "fused"):
        super().__init__()
        sn = _sn if spectral_norm else (lambda m: m)
        self.optimized = bool(optimized)
        self.impl = check_impl("DownBlock", impl)
        self.conv1 = sn(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv2 = sn(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.shortcut = sn(nn.Conv2d(in_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x if self.optimized else F.relu(x)))
        if self.impl == "fused":
            h = conv2d_avg_pool2d(h, self.conv2.weight, self.conv2.bias, padding=1)
        else:
            h = F.avg_pool2d(self.conv2(h), 2)
        return h + self.shortcut(F.avg_pool2d(x, 2))

    def extra_repr(self) -> str:
        return ", ".join((["optimized=True"] if self.optimized else []) + ([f"impl={self.impl!r}"] if self.impl != "fused" else []))


class ResNetDiscriminator(Conditioned, nn.Module):
    """Maps an image in [-1, 1] to one logit per sample (SNGAN's ResNet discriminator).

    ``log2(size/4)`` :class:`DownBlock` s halve the image down to 4x4 while the channels double
    from ``width`` (the first block is SNGAN's "optimized" block); then ReLU, a global *sum* pool
    and a linear layer give the logit. Every conv, the linear layer and the class embedding are
    spectrally normalised (``torch.nn.utils.parametrizations.spectral_norm``; ``spectral_norm=False``
    only for experiments). No BatchNorm: the trainer's single D pass over ``cat([real, fake])``
    equals two passes. ``minibatch_std=k`` (0 or 1 = off) appends a
    :class:`~ganx.models.discriminator.MinibatchStd` channel at 4x4, as in the DCGAN D.

    Conditioning (``num_classes`` set) is the projection discriminator (Miyato & Koyama 2018):
    ``logit = psi(h) + <embed(y), h>`` with ``h`` the pooled features. With ``embedding_dim`` set
    instead, ``y`` is a vector per sample and ``embed`` a linear map without bias (spectrally
    normalised like the rest): ``logit = psi(h) + <W e, h>``.

    ``impl="fused"`` (the default) runs each block's ``conv3x3 -> avgpool2`` as one stride-2
    convolution (:func:`ganx.ops.conv2d_avg_pool2d`); ``impl="reference"`` as the two layers. The
    parameters, their initialisation and the state dict do not depend on it.
    """

    arch = "resnet"  # its name in ganx.models.registry

    def __init__(self, image_size: int = 32, channels: int = 1, width: int = 32, num_classes: Optional[int] = None,
                 spectral_norm: bool = True, minibatch_std: int = 4, embedding_dim: Optional[int] = None,
                 impl: str = "fused"):
        super().__init__()
        set_common(self, image_size, channels, width, num_classes, embedding_dim)
        self.impl = check_impl("ResNetDiscriminator", impl)
        self.spectral_norm, self.minibatch_std = bool(spectral_norm), int(minibatch_std)
        sn = _sn if spectral_norm else (lambda m: m)
        n = _blocks(image_size)
        chans = [channels] + [width * 2 ** i for i in range(n)]
        self.blocks = nn.Sequential(*(DownBlock(chans[i], chans[i + 1], optimized=(i == 0),
                                                spectral_norm=spectral_norm, impl=impl) for i in range(n)))
        self.mbstd = MinibatchStd(self.minibatch_std) if self.minibatch_std > 1 else None
        self.feat_dim = chans[-1] + (1 if self.mbstd is not None else 0)
        self.head = sn(nn.Linear(self.feat_dim, 1))
        self.embed = sn(nn.Embedding(num_classes, self.feat_dim)) if num_classes is not None else None
        if embedding_dim is not None:
            self.embed = sn(nn.Linear(self.embedding_dim, self.feat_dim, bias=False))
        self._init_weights()

    def _init_weights(self) -> None:
        # Xavier-uniform (gain 1; spectral norm rescales the weights anyway), zero biases.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                w = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
                nn.init.xavier_uniform_(w)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled features ``h`` (N, feat_dim): blocks, [minibatch std], ReLU, sum over pixels."""
        h = self.blocks(x)
        if self.mbstd is not None:
            h = self.mbstd(h)
        return F.relu(h).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x``: (N, C, H, W); ``labels``: (N,) int64 for class-conditional models, (N, embedding_dim)
        float for embedding-conditioned ones. Returns (N,) logits."""
        check_discriminator_input("ResNetDiscriminator", self, x, labels)
        return projection_logit(self, self.features(x), labels)

    @classmethod
    def from_config(cls, cfg, num_classes: Optional[int], embedding_dim: Optional[int] = None) -> "ResNetDiscriminator":
        """The discriminator of a training config (ganx.train.TrainConfig; its ``spectral_norm``
        resolves to True for this architecture unless the config turns it off)."""
        return cls(cfg.image_size, cfg.channels, cfg.d_width, num_classes, spectral_norm=cfg.spectral_norm is not False,
                   minibatch_std=cfg.minibatch_std, embedding_dim=embedding_dim, impl=cfg.impl)

    def config(self) -> dict:
        """Constructor arguments (plain types) to rebuild this module, e.g. from a checkpoint
        (``embedding_dim`` only for an embedding-conditioned model)."""
        return {**discriminator_config(self), "impl": self.impl}
