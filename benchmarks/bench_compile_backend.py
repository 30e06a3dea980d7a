#!/usr/bin/env python
"""An SNGAN-style ResNet generator (32 px, 3 residual up-blocks: BN-ReLU-upsample-conv3x3-BN-ReLU-
conv3x3 plus an upsample-conv1x1 shortcut; spectral-normed convs, functional nearest upsampling
in each block's main path and shortcut): forward + backward per call, eager vs ``ganx.fuse`` vs
``torch.compile`` (Inductor) vs ``torch.compile(backend="ganx")``.

    python benchmarks/bench_compile_backend.py [--batch 16] [--width 256] [--turns 10] [--no-sn]

Timed in one process, the contenders alternating turn after turn (so a change of machine load
hits all alike); median of per-turn times and of per-turn speed-ups over eager, the 1-minute load
average printed with them. ``--no-sn`` takes plain convs (no spectral norm). Results:
benchmarks/results/compile_backend-cpu-<threads>thr-<date>[-<tag>].{md,json} (``--out -``: none).
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import ganx
from ganx.convert import _compile

SN = nn.utils.parametrizations.spectral_norm


class Block(nn.Module):
    def __init__(self, c, sn=True):
        super().__init__()
        wrap = SN if sn else (lambda m: m)
        self.b1, self.b2 = nn.BatchNorm2d(c), nn.BatchNorm2d(c)
        self.c1, self.c2 = wrap(nn.Conv2d(c, c, 3, 1, 1)), wrap(nn.Conv2d(c, c, 3, 1, 1))
        self.sc = wrap(nn.Conv2d(c, c, 1))

    def forward(self, x):
        h = self.c1(F.interpolate(F.relu(self.b1(x)), scale_factor=2))
        h = self.c2(F.relu(self.b2(h)))
        return h + self.sc(F.interpolate(x, scale_factor=2))


class SNGANStyleG(nn.Module):
    def __init__(self, nz=128, ch=128, sn=True):
        super().__init__()
        self.ch = ch
        self.l1 = nn.Linear(nz, 4 * 4 * ch)
        self.blocks = nn.Sequential(Block(ch, sn), Block(ch, sn), Block(ch, sn))
        self.out = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.out(self.blocks(self.l1(z).view(-1, self.ch, 4, 4)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-sn", action="store_true", help="plain convs (no spectral norm)")
    ap.add_argument("--no-inductor", action="store_true", help="leave out plain torch.compile (its compile time)")
    ap.add_argument("--tag", default="", help="suffix for the result file names")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"), help="directory, or - for none")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    _compile.register()
    torch.manual_seed(0)
    g = SNGANStyleG(ch=a.width, sn=not a.no_sn).train()
    fused, report = ganx.fuse(g)
    print(f"fuse: {len(report.fused)} fused, {len(report.left)} left")
    contenders = {"eager": g, "ganx.fuse": fused}
    if not a.no_inductor:
        contenders["torch.compile"] = torch.compile(g)
    contenders["compile ganx"] = torch.compile(g, backend="ganx")
    z = torch.randn(a.batch, 128)
    load0 = os.getloadavg()
    warm = {}
    for name, m in contenders.items():  # warm up (and compile)
        t = time.perf_counter()
        m(z).mean().backward()
        warm[name] = time.perf_counter() - t
        print(f"warm-up {name}: {warm[name]:.1f} s")
    backend_lines = list(_compile.LAST)
    times = {k: [] for k in contenders}
    for _ in range(a.turns):
        for name, m in contenders.items():
            t = time.perf_counter()
            m(z).mean().backward()
            times[name].append(time.perf_counter() - t)
    load1 = os.getloadavg()
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = statistics.median(e / t for e, t in zip(times["eager"], ts))
        rows.append({"contender": name, "ms": med * 1e3, "speedup": ratio, "warmup_s": warm[name]})
        print(f"{name:14s} {med * 1e3:9.1f} ms  {ratio:5.2f}x eager   (load {load1[0]:.2f})")
    if a.out == "-":
        return
    now = datetime.datetime.now(datetime.timezone.utc)
    head = {"date": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "torch": torch.__version__, "threads": a.threads,
            "batch": a.batch, "width": a.width, "spectral_norm": not a.no_sn, "turns": a.turns,
            "load_before": "%.2f %.2f %.2f" % load0, "load_after": "%.2f %.2f %.2f" % load1,
            "command": "bench_compile_backend.py " + " ".join(sys.argv[1:])}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"compile_backend-cpu-{a.threads}thr-{now.strftime('%Y-%m-%d')}{'-' + a.tag if a.tag else ''}"
    Path(f"{stem}.json").write_text(json.dumps({"header": head, "rows": rows, "fuse_report": str(report),
                                                     "backend": backend_lines}, indent=1))
    md = [f"# ResNet SNGAN-32 generator, forward + backward: eager vs ganx.fuse vs torch.compile vs backend=\"ganx\"",
          "", f"- {head['date']}; torch {head['torch']}; {a.threads} threads; batch {a.batch}; {a.width} channels; "
          f"spectral norm: {'yes' if not a.no_sn else 'no'}; {a.turns} alternating turns",
          f"- load average (uptime, 1/5/15 min): before {head['load_before']}, after {head['load_after']}",
          f"- command: `python benchmarks/{head['command']}`", "",
          "| contender | time (median) | speed-up over eager (median of per-turn ratios) | warm-up |", "|---|---|---|---|"]
    md += [f"| {r['contender']} | {r['ms']:.1f} ms | **{r['speedup']:.2f}x** | {r['warmup_s']:.1f} s |" for r in rows]
    md += ["", "```", str(report), "```", "", "backend=\"ganx\" (last graph):", "", "```"] + backend_lines + ["```", ""]
    Path(f"{stem}.md").write_text("\n".join(md))
    print(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
