#!/usr/bin/env python
"""The ResNet pair's training step (benchmarks/ganx_bench/train_step.py's Step: D update + G update,
batch 64, 32 px, RGB, hinge loss) with ganx's fused layers and in plain PyTorch, each in NCHW and
in NHWC (channels_last weights and images: the Trainer's --memory-format), timed round-robin.

Round-robin matters on a host whose speed drifts: every round times one step of each of the four
variants in turn, so a slow spell hits all four alike; the report gives each variant's median over
the rounds and the ratios of those medians. The numerics of the variants are checked by
bench_train_step.py (which times the contenders one after the other, not round-robin).

    python benchmarks/bench_train_step_layouts.py [--threads 2] [--rounds 15] [--out FILE.md]
"""
import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ganx_bench.train_step import Step, build_models, resnet  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="timed rounds (each times every variant once)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the Markdown report here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = resnet(32, 64, "fp32")
    torch.manual_seed(0)
    G0, D0 = build_models(cfg, "reference")
    state = (G0.state_dict(), D0.state_dict())
    inputs = {"real": torch.rand(cfg.batch, cfg.channels, 32, 32) * 2 - 1,
              "z": torch.randn(cfg.batch, cfg.latent_dim), "z2": torch.randn(cfg.batch, cfg.latent_dim)}
    layouts = {"NCHW": torch.contiguous_format, "NHWC": torch.channels_last}
    steps = {(c, l): Step(cfg, c, state, inputs, torch.device("cpu"), memory_format=f)
             for c in ("fused", "reference") for l, f in layouts.items()}
    for s in steps.values():
        for _ in range(args.warmup):
            s()
    load0 = os.getloadavg()
    times = {k: [] for k in steps}
    for _ in range(args.rounds):
        for k, s in steps.items():
            t = time.perf_counter()
            s()
            times[k].append(time.perf_counter() - t)
    load1 = os.getloadavg()
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    lines = [
        "# ResNet training step in NCHW and NHWC, ganx fused vs plain PyTorch (round-robin)", "",
        f"- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} torch threads; torch {torch.__version__}; ganx @ {commit}",
        f"- load average before {load0[0]:.2f}, after {load1[0]:.2f}; {args.rounds} rounds, each one step of every "
        "variant; median step time per variant", "",
        "| layout | fused | plain PyTorch | plain / fused |", "|---|---|---|---|"]
    for l in layouts:
        f, r = med[("fused", l)], med[("reference", l)]
        lines.append(f"| {l} | {f * 1e3:.1f} ms | {r * 1e3:.1f} ms | {r / f:.2f}x |")
    lines += ["", f"ganx NHWC against ganx NCHW: {med[('fused', 'NCHW')] / med[('fused', 'NHWC')]:.2f}x; "
              f"ganx NHWC against plain NCHW: {med[('reference', 'NCHW')] / med[('fused', 'NHWC')]:.2f}x"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
