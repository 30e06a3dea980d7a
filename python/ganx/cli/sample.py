"""``ganx sample``: an image grid from a checkpoint's generator."""
from __future__ import annotations

import argparse
import math
import os

import torch

from ganx.cli.errors import UserError
from ganx.models.common import latents
from ganx.train import load_generator, resolve_device
from ganx.train.config import MAX_SEED, ConfigError
from ganx.train.images import save_grid

__all__ = ["add_parser", "run"]

MAX_SAMPLES = 100_000  # one grid; more is not an image anyone looks at


def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("sample", help="draw an image grid from a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint file or run folder")
    s.add_argument("--n", type=int, default=64, help="number of images")
    s.add_argument("--class", dest="label", metavar="LABEL", default=None,
                   help="class to draw (index or class name); conditional models only. Without it a "
                        "conditional model draws one row per class, like the training grids")
    s.add_argument("--out", default="grid.png", help="output PNG (or JPEG); its folder must exist")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about sqrt(n))")
    s.add_argument("--seed", type=int, default=0, help="seed of the latents")
    s.add_argument("--no-ema", action="store_true", help="use G's raw weights instead of their EMA")
    s.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    return s


def _per_class(n: int, k: int) -> int:
    return max(1, math.ceil(n / k))


def _check_out(out: str) -> None:
    """The grid's path, checked before the checkpoint is even read: an image file name in a folder
    that exists (nothing is created silently)."""
    if os.path.isdir(out):
        raise UserError(f"--out {out!r} is a folder; give the image's file name (e.g. {os.path.join(out, 'grid.png')})")
    if os.path.splitext(out)[1].lower() not in (".png", ".jpg", ".jpeg"):
        raise UserError(f"--out {out!r}: the grid is an image; give a .png (or .jpg) file name")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        what = "is not a folder" if os.path.exists(parent) else "does not exist"
        raise UserError(f"--out {out!r}: its folder {parent!r} {what}")
    if not os.access(parent, os.W_OK):
        raise UserError(f"--out {out!r}: its folder {parent!r} is not writable")


def _labels(args, G, names):
    """The class of each image: the one asked for, else (conditional G) a cycle through the classes."""
    if G.num_classes is None:
        if args.label is not None:
            raise UserError("--class: this checkpoint's generator is unconditional")
        return None
    if args.label is None:
        # One row per class (like the training grids): class k fills row k.
        return torch.arange(args.n) // _per_class(args.n, G.num_classes)
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
    if not 1 <= args.n <= MAX_SAMPLES:
        raise UserError(f"--n must be in [1, {MAX_SAMPLES}], got {args.n}")
    if args.nrow is not None and not 1 <= args.nrow <= args.n:
        raise UserError(f"--nrow must be in [1, --n = {args.n}], got {args.nrow}")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must be in [0, 2**63 - 8], got {args.seed}")
    _check_out(args.out)
    try:
        device = resolve_device(args.device)
        G, ckpt = load_generator(args.checkpoint, use_ema=not args.no_ema, device=device)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e
    names = ckpt.get("class_names") or []
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
        raise UserError(f"checkpoint {args.checkpoint!r}: its class_names is not a list of names "
                        f"(got {type(names).__name__}); the file is not one ganx wrote")
    labels = _labels(args, G, list(names))
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        z = latents(args.n, G.latent_dim, g, device)
        imgs = G(z, labels.to(device) if labels is not None else None)
    nrow = args.nrow or (_per_class(args.n, G.num_classes) if (labels is not None and args.label is None)
                         else max(1, math.ceil(math.sqrt(args.n))))
    save_grid(imgs, args.out, nrow)
    print(f"ganx: wrote {args.n} samples to {args.out}")
    return 0
