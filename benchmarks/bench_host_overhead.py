#!/usr/bin/env python
"""Host overhead per call on tiny tensors: ganx's fused layers and D loss vs the eager PyTorch
they replace (time per call and launches per call; the GPU rule's forms forced).

    python benchmarks/bench_host_overhead.py --device cpu       # ~3 min on 2 cores
    python benchmarks/bench_host_overhead.py --tiny --out -     # smoke test, writes nothing

Results go to benchmarks/results/host_overhead-<device>-<date>.{md,json}. See --help and
benchmarks/README.md. The code lives in benchmarks/ganx_bench/host_overhead.py.
"""
import sys
from pathlib import Path

from ganx_bench.host_overhead import main

if __name__ == "__main__":
    sys.exit(main(default_out=Path(__file__).resolve().parent / "results"))
