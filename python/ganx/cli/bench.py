"""``ganx bench``: the quick CPU timer of ganx/bench.py (the full suite is the repository's
benchmarks/)."""
from __future__ import annotations

import argparse
import os

from ganx import bench as quick_bench
from ganx.cli.errors import UserError
from ganx.train.config import max_threads

__all__ = ["add_parser", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    b = sub.add_parser("bench", help="quick CPU timer of the fused ops against eager PyTorch (about a minute)",
                       description="Times ganx's fused ops against eager PyTorch on the CPU: upsample_conv2d on "
                                   "four DCGAN generator layers (forward, forward+backward) and the BCE "
                                   "discriminator loss at 64 and 1M logits, each checked against eager first, "
                                   "and prints the Markdown table. The full benchmark suite (GPU, torch.compile, "
                                   "the folded conv_transpose2d, more shapes, plots) is in the repository's "
                                   "benchmarks/.")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    b.add_argument("--out", default=None, help="also write the report as .md and .json into this folder")
    return b


def run(args) -> int:
    if args.threads is not None and not 1 <= args.threads <= max_threads():
        raise UserError(f"--threads must be in [1, {max_threads()}] (the CPUs of this machine), got {args.threads}")
    if args.out is not None:
        # Checked before the minutes of timing, whose results would otherwise be lost.
        if os.path.lexists(args.out) and not os.path.isdir(args.out):
            raise UserError(f"--out {args.out!r} exists and is not a folder (the report goes into a folder)")
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as e:
            raise UserError(f"--out {args.out!r}: cannot create the folder ({e.strerror or e})") from None
        if not os.access(args.out, os.W_OK):
            raise UserError(f"--out {args.out!r}: the folder is not writable")
    print(quick_bench.run_quick(args.out, threads=args.threads))
    return 0
