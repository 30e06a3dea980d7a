#!/usr/bin/env python
"""One full GAN training step (D + G update), images/s: ganx fused vs reference vs torch.compile.

    python benchmarks/bench_train_step.py                      # CPU: 32 and 64 px, batch 64, fp32
    python benchmarks/bench_train_step.py --device cuda --out DIR   # + batch 256 and bf16 autocast
    python benchmarks/bench_train_step.py --tiny --out -       # smoke test, writes nothing

Results go to benchmarks/results/train_step-<device>-<date>.{md,json,png}. See --help and
benchmarks/README.md. The code lives in benchmarks/ganx_bench/train_step.py.
"""
import sys
from pathlib import Path

from ganx_bench.train_step import main

if __name__ == "__main__":
    sys.exit(main(default_out=Path(__file__).resolve().parent / "results"))
