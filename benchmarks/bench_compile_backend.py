#!/usr/bin/env python
"""An SNGAN-style ResNet generator (32 px, spectral-normed convs, functional nearest upsampling in
each block's main path and shortcut): forward + backward per call, eager vs ``ganx.fuse`` vs
``torch.compile`` (Inductor) vs ``torch.compile(backend="ganx")``.

    python benchmarks/bench_compile_backend.py [--batch 16] [--width 128] [--turns 10]

Timed in one process, the contenders alternating turn after turn (so a change of machine load
hits all alike); median of per-turn times, the 1-minute load average printed with them.
"""
import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

import ganx
from ganx.convert import _compile

SN = nn.utils.parametrizations.spectral_norm


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.b1, self.b2 = nn.BatchNorm2d(c), nn.BatchNorm2d(c)
        self.c1, self.c2 = SN(nn.Conv2d(c, c, 3, 1, 1)), SN(nn.Conv2d(c, c, 3, 1, 1))
        self.sc = SN(nn.Conv2d(c, c, 1))

    def forward(self, x):
        h = self.c1(F.interpolate(F.relu(self.b1(x)), scale_factor=2))
        h = self.c2(F.relu(self.b2(h)))
        return h + self.sc(F.interpolate(x, scale_factor=2))


class SNGANStyleG(nn.Module):
    def __init__(self, nz=128, ch=128):
        super().__init__()
        self.ch = ch
        self.l1 = nn.Linear(nz, 4 * 4 * ch)
        self.blocks = nn.Sequential(Block(ch), Block(ch), Block(ch))
        self.out = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.out(self.blocks(self.l1(z).view(-1, self.ch, 4, 4)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    _compile.register()
    torch.manual_seed(0)
    g = SNGANStyleG(ch=a.width).train()
    fused, report = ganx.fuse(g)
    print(f"fuse: {len(report.fused)} fused, {len(report.left)} left")
    contenders = {"eager": g, "ganx.fuse": fused, "torch.compile": torch.compile(g),
                  "compile ganx": torch.compile(g, backend="ganx")}
    z = torch.randn(a.batch, 128)
    for name, m in contenders.items():  # warm up (and compile)
        t = time.perf_counter()
        m(z).mean().backward()
        print(f"warm-up {name}: {time.perf_counter() - t:.1f} s")
    times = {k: [] for k in contenders}
    for _ in range(a.turns):
        for name, m in contenders.items():
            t = time.perf_counter()
            m(z).mean().backward()
            times[name].append(time.perf_counter() - t)
    base = sorted(times["eager"])[a.turns // 2]
    for name, ts in times.items():
        med = sorted(ts)[a.turns // 2]
        print(f"{name:14s} {med * 1e3:9.1f} ms  {base / med:5.2f}x eager   (load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
