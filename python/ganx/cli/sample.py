"""``ganx sample``: an image grid from a checkpoint's generator."""
from __future__ import annotations

import argparse
import math

import torch

from ganx.cli.errors import UserError
from ganx.models.common import latents
from ganx.train import load_generator, resolve_device
from ganx.train.config import ConfigError
from ganx.train.images import save_grid

__all__ = ["add_parser", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("sample", help="draw an image grid from a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint file or run folder")
    s.add_argument("--n", type=int, default=64, help="number of images")
    s.add_argument("--class", dest="label", metavar="LABEL", default=None,
                   help="class to draw (index or class name); conditional models only. Without it a "
                        "conditional model cycles through the classes")
    s.add_argument("--out", default="grid.png", help="output PNG")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about sqrt(n))")
    s.add_argument("--seed", type=int, default=0, help="seed of the latents")
    s.add_argument("--no-ema", action="store_true", help="use G's raw weights instead of their EMA")
    s.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    return s


def _labels(args, G, names):
    """The class of each image: the one asked for, else (conditional G) a cycle through the classes."""
    if G.num_classes is None:
        if args.label is not None:
            raise UserError("--class: this checkpoint's generator is unconditional")
        return None
    if args.label is None:
        return torch.arange(args.n) % G.num_classes
    if args.label in names:
        c = names.index(args.label)
    elif args.label.lstrip("-").isdigit():
        c = int(args.label)
    else:
        raise UserError(f"--class {args.label!r}: not a class index or name (classes: {names})")
    if not 0 <= c < G.num_classes:
        raise UserError(f"--class {c}: out of range, the model has {G.num_classes} classes (0..{G.num_classes - 1})")
    return torch.full((args.n,), c, dtype=torch.int64)


def run(args) -> int:
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    try:
        device = resolve_device(args.device)
        G, ckpt = load_generator(args.checkpoint, use_ema=not args.no_ema, device=device)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e
    labels = _labels(args, G, list(ckpt.get("class_names") or []))
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        z = latents(args.n, G.latent_dim, g, device)
        imgs = G(z, labels.to(device) if labels is not None else None)
    nrow = args.nrow or (G.num_classes if (labels is not None and args.label is None and args.n >= G.num_classes * 2)
                         else max(1, math.ceil(math.sqrt(args.n))))
    save_grid(imgs, args.out, nrow)
    print(f"ganx: wrote {args.n} samples to {args.out}")
    return 0
