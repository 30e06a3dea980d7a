#!/usr/bin/env python
"""Adversarial losses (BCE, hinge, WGAN): ganx one-pass kernels vs their eager twins vs torch.compile.

    python benchmarks/bench_losses.py                      # CPU (or CUDA if present), 64 .. 16M logits
    python benchmarks/bench_losses.py --device cuda --out DIR
    python benchmarks/bench_losses.py --tiny --out -       # smoke test, writes nothing

Results go to benchmarks/results/losses-<device>-<date>.{md,json,png}. See --help and
benchmarks/README.md. The code lives in benchmarks/ganx_bench/losses.py.
"""
import sys
from pathlib import Path

from ganx_bench.losses import main

if __name__ == "__main__":
    sys.exit(main(default_out=Path(__file__).resolve().parent / "results"))
