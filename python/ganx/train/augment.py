"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

The discriminator of a GAN trained on little data memorises the real images. DiffAugment shows D
only *augmented* images, real and generated alike, in D's updates and in G's: every
transformation is differentiable in the image, so G's gradient flows back through it, and
because the generated images are augmented exactly like the real ones, G is not pushed to
produce augmented-looking images.

Three transformations (the paper's "color", "translation" and "cutout"), each drawn independently
per image, applied in that order whatever the order the policy names them in:

* ``color``: brightness ``x + b`` with ``b ~ U(-0.5, 0.5)``; saturation: each pixel's distance
  to its mean over the channels scaled by ``s ~ U(0, 2)`` (nothing for one-channel images);
  contrast: the distance to the image's mean over all its pixels and channels scaled by
  ``c ~ U(0.5, 1.5)``.
* ``translation``: an integer shift of up to 1/8 of the image side along each axis
  (``dy ~ U{-r, .., r}``, ``r = round(H / 8)``; likewise ``dx``); what is shifted in is 0.
* ``cutout``: a square of half the image side, centred uniformly on the image (clipped at its
  borders), set to 0.

Images are in [-1, 1], so the 0 that fills translated borders and cut-out squares is mid-grey.

The random draws (a handful of numbers per image) come from a CPU ``torch.Generator`` the
trainer seeds and checkpoints, so a run with augmentation resumes bit-identically on the CPU and
draws the same augmentations on any device; with augmentation off nothing is drawn at all.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["POLICIES", "TRANSLATION_RATIO", "CUTOUT_RATIO", "parse_policy", "draw_params", "apply_params",
           "DiffAugment", "Augmented"]

POLICIES = ("color", "translation", "cutout")  # also the order in which they are applied
TRANSLATION_RATIO = 0.125  # the largest shift, as a fraction of the image side
CUTOUT_RATIO = 0.5  # the side of the cut-out square, as a fraction of the image side


def parse_policy(spec) -> str:
    """A policy string (``"translation,cutout,color"``, any order, spaces allowed; ``""`` or
    ``"none"``: off) in its canonical form: the names it holds, comma-separated, in the order they
    are applied. A ValueError naming an unknown name."""
    if spec is None:
        return ""
    if not isinstance(spec, str):
        raise ValueError(f"a comma-separated string of {', '.join(POLICIES)} is expected, got {type(spec).__name__}")
    parts = [p.strip().lower() for p in spec.split(",") if p.strip()]
    if parts in (["none"], ["off"]):
        return ""
    unknown = [p for p in parts if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0][:40]!r}; use a comma-separated subset of "
                         f"{', '.join(POLICIES)} (or '' for none)")
    return ",".join(p for p in POLICIES if p in parts)


def _sizes(h: int, w: int) -> Tuple[int, int, int, int]:
    """(largest shift along y, along x, cut-out height, cut-out width) for an H x W image."""
    return (int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5),
            max(1, int(h * CUTOUT_RATIO + 0.5)), max(1, int(w * CUTOUT_RATIO + 0.5)))


def draw_params(policy: str, n: int, h: int, w: int, generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
    """The random parameters of ``policy`` for ``n`` images of ``h x w`` pixels, as CPU tensors:
    ``brightness``, ``saturation``, ``contrast`` (n,) floats (color); ``shift`` (n, 2) int64
    ``(dy, dx)`` (translation); ``cutout`` (n, 2) int64 top-left corner ``(y0, x0)`` of the square,
    possibly negative (cutout). Always drawn in this order, so a policy's draws do not depend on
    how it was written."""
    names = parse_policy(policy).split(",")
    sy, sx, ch, cw = _sizes(h, w)
    p: Dict[str, Tensor] = {}
    if "color" in names:
        p["brightness"] = torch.rand(n, generator=generator, dtype=torch.float64) - 0.5
        p["saturation"] = torch.rand(n, generator=generator, dtype=torch.float64) * 2
        p["contrast"] = torch.rand(n, generator=generator, dtype=torch.float64) + 0.5
    if "translation" in names:
        dy = torch.randint(-sy, sy + 1, (n,), generator=generator)
        dx = torch.randint(-sx, sx + 1, (n,), generator=generator)
        p["shift"] = torch.stack([dy, dx], 1)
    if "cutout" in names:
        cy = torch.randint(0, h, (n,), generator=generator)
        cx = torch.randint(0, w, (n,), generator=generator)
        p["cutout"] = torch.stack([cy - ch // 2, cx - cw // 2], 1)
    return p


def apply_params(x: Tensor, params: Dict[str, Tensor]) -> Tensor:
    """``x`` (N, C, H, W) augmented with ``params`` (from :func:`draw_params`, on any device);
    differentiable in ``x``. The parameters of one image apply to that image only."""
    n, c, h, w = x.shape
    if "brightness" in params:
        def per_image(name: str) -> Tensor:
            return params[name].to(device=x.device, dtype=x.dtype).view(n, 1, 1, 1)

        x = x + per_image("brightness")
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * per_image("saturation") + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * per_image("contrast") + mean
    if "shift" in params:
        # out[:, :, i, j] = x[:, :, i - dy, j - dx] where that pixel exists, else 0: one gather of
        # clamped indices times the mask of the valid ones (its backward scatters into x).
        shift = params["shift"].to(x.device)
        iy = torch.arange(h, device=x.device)[None, :] - shift[:, :1]  # (n, h)
        ix = torch.arange(w, device=x.device)[None, :] - shift[:, 1:]  # (n, w)
        valid = ((iy >= 0) & (iy < h))[:, :, None] & ((ix >= 0) & (ix < w))[:, None, :]  # (n, h, w)
        rows = torch.arange(n, device=x.device)[:, None, None]
        x = x[rows, :, iy.clamp(0, h - 1)[:, :, None], ix.clamp(0, w - 1)[:, None, :]]  # (n, h, w, c)
        x = (x * valid[..., None].to(x.dtype)).permute(0, 3, 1, 2).contiguous()
    if "cutout" in params:
        _, _, ch, cw = _sizes(h, w)
        corner = params["cutout"].to(x.device)
        ys = torch.arange(h, device=x.device)[None, :]
        xs = torch.arange(w, device=x.device)[None, :]
        in_y = (ys >= corner[:, :1]) & (ys < corner[:, :1] + ch)  # (n, h)
        in_x = (xs >= corner[:, 1:]) & (xs < corner[:, 1:] + cw)  # (n, w)
        keep = ~(in_y[:, :, None] & in_x[:, None, :])
        x = x * keep[:, None].to(x.dtype)
    return x


class DiffAugment:
    """Draws and applies a policy's augmentations, one independent draw per image per call.
    ``generator`` is the CPU generator of the draws (None: torch's global one). ``shard=(rank,
    world_size)``: every process draws the parameters of the whole global batch and keeps its
    own slice, so the generator stays in step on every process (and one checkpoint restores all)."""

    def __init__(self, policy: str, generator: Optional[torch.Generator] = None, shard: Tuple[int, int] = (0, 1)):
        self.policy = parse_policy(policy)
        self.generator = generator
        self.rank, self.world_size = int(shard[0]), int(shard[1])

    def __bool__(self) -> bool:
        return bool(self.policy)

    def __call__(self, x: Tensor) -> Tensor:
        if not self.policy:
            return x
        if x.dim() != 4:
            raise ValueError(f"DiffAugment: x must be (N, C, H, W), got {tuple(x.shape)}")
        n, _, h, w = x.shape
        params = draw_params(self.policy, n * self.world_size, h, w, self.generator)
        if self.world_size > 1:
            params = {k: v[self.rank * n:(self.rank + 1) * n] for k, v in params.items()}
        return apply_params(x, params)

    def __repr__(self) -> str:
        return f"DiffAugment({self.policy!r})"


class Augmented:
    """A discriminator that sees its images through ``augment``: ``D(augment(x), labels)``. The
    trainer hands this to the loss in both updates, so real and generated images are augmented
    alike, in one call over ``cat([real, fake])`` in D's update and over ``fake`` in G's."""

    def __init__(self, D, augment: DiffAugment):
        self.D, self.augment = D, augment

    def __call__(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        return self.D(self.augment(x), labels)
