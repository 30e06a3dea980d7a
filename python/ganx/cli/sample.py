"""``ganx sample``: an image grid from a checkpoint's generator (unconditional, per class, or per
vector for a generator conditioned on embeddings)."""
from __future__ import annotations

import argparse
import math
import os

import torch

from ganx.cli.errors import UserError
from ganx.data import DataError, load_vectors
from ganx.models.common import latents
from ganx.train import load_generator, resolve_device
from ganx.train.config import MAX_SEED, ConfigError
from ganx.train.plots import save_grid

__all__ = ["add_parser", "run"]

MAX_SAMPLES = 100_000  # one grid; more is not an image anyone looks at


def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("sample", help="draw an image grid from a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint file or run folder")
    s.add_argument("--n", type=int, default=None, help="number of images (default 64); with --embedding, images "
                   "per vector (default 1)")
    s.add_argument("--class", dest="label", metavar="LABEL", default=None,
                   help="class to draw (index or class name); class-conditional models only. Without it a "
                        "conditional model draws one row per class, like the training grids")
    s.add_argument("--embedding", metavar="FILE", default=None,
                   help="vectors to draw from, for a generator conditioned on embeddings: a .npy of shape (N, E) "
                        "or (E,), or a .npz with an 'embeddings' array; one row of --n images per vector. Without "
                        "it such a model draws one row per vector held in the checkpoint (its training grids')")
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
        if args.embedding is not None:
            raise UserError("--embedding: this checkpoint's generator is unconditional, not conditioned on embeddings")
        return None
    if args.embedding is not None:
        raise UserError(f"--embedding: this checkpoint's generator is class-conditional ({G.num_classes} classes), "
                        f"not conditioned on embeddings; use --class")
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


def read_vectors(path: str) -> torch.Tensor:
    """``--embedding FILE`` as a float32 (N, E) tensor (ganx.data.load_vectors); a UserError naming
    the flag and the file otherwise."""
    try:
        return load_vectors(path)
    except DataError as e:
        raise UserError(f"--embedding: {e}") from None


def _vectors(args, G, ckpt):
    """For a generator conditioned on embeddings: (the vector of each image, images per grid row)."""
    e = G.embedding_dim
    if args.label is not None:
        raise UserError(f"--class: this checkpoint's generator is conditioned on {e}-value embeddings, not on "
                        f"classes; give its vectors with --embedding FILE.npy")
    if args.embedding is not None:
        vectors = read_vectors(args.embedding)
        if vectors.shape[1] != e:
            raise UserError(f"--embedding {args.embedding!r}: its vectors have {vectors.shape[1]} values but this "
                            f"checkpoint's generator takes {e}")
        per = 1 if args.n is None else args.n
        if len(vectors) * per > MAX_SAMPLES:
            raise UserError(f"--embedding: {len(vectors)} vectors x --n {per} = {len(vectors) * per} images, more than "
                            f"{MAX_SAMPLES}")
        return vectors.repeat_interleave(per, dim=0), (per if per > 1 else max(1, math.ceil(math.sqrt(len(vectors)))))
    record = ckpt.get("conditioning")
    held = record.get("sample_embeddings") if isinstance(record, dict) else None
    if not isinstance(held, torch.Tensor) or held.dim() != 2 or held.shape[1] != e or len(held) < 1 \
            or not held.is_floating_point() or not bool(torch.isfinite(held).all()):
        raise UserError(f"this checkpoint's generator is conditioned on {e}-value embeddings and the checkpoint holds "
                        f"no usable sample vectors; give them with --embedding FILE.npy")
    n = 64 if args.n is None else args.n
    per = _per_class(n, len(held))
    return held.float()[torch.arange(n) // per], per


def run(args) -> int:
    if args.label is not None and args.embedding is not None:
        raise UserError("--class and --embedding exclude each other (a generator is conditioned on one or the other)")
    n = args.n if args.n is not None else (1 if args.embedding is not None else 64)
    if not 1 <= n <= MAX_SAMPLES:
        raise UserError(f"--n must be in [1, {MAX_SAMPLES}], got {n}")
    if args.nrow is not None and args.embedding is None and not 1 <= args.nrow <= n:
        raise UserError(f"--nrow must be in [1, --n = {n}], got {args.nrow}")
    if args.nrow is not None and args.nrow < 1:
        raise UserError(f"--nrow must be >= 1, got {args.nrow}")
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
    if getattr(G, "embedding_dim", None) is not None:
        labels, per_row = _vectors(args, G, ckpt)
        n = len(labels)
        if args.nrow is not None and args.nrow > n:
            raise UserError(f"--nrow must be in [1, {n}] (the images drawn), got {args.nrow}")
    else:
        args.n = n
        labels = _labels(args, G, list(names))
        per_row = (_per_class(n, G.num_classes) if (labels is not None and args.label is None)
                   else max(1, math.ceil(math.sqrt(n))))
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        z = latents(n, G.latent_dim, g, device)
        imgs = G(z, labels.to(device) if labels is not None else None)
    save_grid(imgs, args.out, args.nrow or per_row)
    print(f"ganx: wrote {n} samples to {args.out}")
    return 0
