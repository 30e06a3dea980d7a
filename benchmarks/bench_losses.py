#!/usr/bin/env python
"""BCE adversarial losses: ganx one-pass kernels vs eager BCEWithLogits vs torch.compile.

    python benchmarks/bench_losses.py                      # CPU (or CUDA if present), 64 .. 16M logits
    python benchmarks/bench_losses.py --device cuda --out DIR
    python benchmarks/bench_losses.py --tiny --out -       # smoke test, writes nothing

Results go to benchmarks/results/losses-<device>-<date>.{md,json,png}. See --help and
benchmarks/README.md. The code lives in ganx._bench.losses (so `ganx bench` has it too).
"""
import sys
from pathlib import Path

from ganx._bench.losses import main

if __name__ == "__main__":
    sys.exit(main(default_out=Path(__file__).resolve().parent / "results"))
