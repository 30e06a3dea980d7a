#!/usr/bin/env python
"""upsample_conv2d: ganx fused vs eager Upsample+Conv2d vs torch.compile vs folded conv_transpose2d.

    python benchmarks/bench_upsample_conv.py                      # CPU (or CUDA if present), full set
    python benchmarks/bench_upsample_conv.py --device cuda --out DIR
    python benchmarks/bench_upsample_conv.py --tiny --out -       # smoke test, writes nothing

Results go to benchmarks/results/upsample_conv-<device>-<date>.{md,json,png}. See --help and
benchmarks/README.md. The code lives in benchmarks/ganx_bench/upsample_conv.py.
"""
import sys
from pathlib import Path

from ganx_bench.upsample_conv import main

if __name__ == "__main__":
    sys.exit(main(default_out=Path(__file__).resolve().parent / "results"))
