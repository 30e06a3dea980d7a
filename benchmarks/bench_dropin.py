#!/usr/bin/env python
"""The ganx drop-in on ordinary DCGAN scripts: unmodified vs ganx.fuse(G) vs the whole drop-in.

    python benchmarks/bench_dropin.py                    # CPU, 2 threads, batch 64 (several minutes)
    python benchmarks/bench_dropin.py --quick --out -    # smoke test, writes nothing

Two parts, each timed in this one process with the contenders alternating (turn after turn,
so a change in machine load hits all of them alike) and reported as the median of per-turn
ratios:

* **per training step** (D update on real + fake, G update; Adam) of the models in examples/:
  the resize-conv DCGAN at 32 px and the ConvTranspose2d DCGAN at 64 px (RGB, latent 100,
  width 64). Contenders: the unmodified script (nn.Sigmoid + nn.BCELoss); ``ganx.fuse(G)``
  only; the whole drop-in (``fuse(G)``, ``logits_and_bce(D, criterion)``, the two D-loss
  calls replaced by ``ganx.nn.DiscriminatorBCELoss``); the drop-in with D's parameters frozen
  during the G step (a plain-PyTorch change, for scale); for the ConvTranspose DCGAN also the
  drop-in with ``where_slower="fuse"`` (what ``fuse`` declines to do on the CPU).
* **per layer** (forward + backward, batch 64) of the generator layers ``fuse`` decides on:
  each ConvTranspose2d(4, 2, 1) of the 64 px DCGAN as nn.ConvTranspose2d vs ganx's
  FusedConvTranspose2d, and each Upsample + Conv2d of the 32 px one vs UpsampleConv2d.

Three more parts, not run by default (``--parts algo,resnet,profile``):

* **algo**: each generator layer of both models' resize-conv generators forward and backward
  apart under each of ganx's three CPU compositions (deconv / stacked / split, forced), with
  the one the static rule picks (csrc/upsample_conv2d.cpp, ``rule``): the evidence for it.
* **resnet** (issue 23): the ResNet shortcut, a 1x1 upsample-conv (batch 16, 256 -> 256
  channels, 16x16 maps; ``--resnet-batch``, ``--resnet-width``), as nn.Upsample + nn.Conv2d vs
  ganx's UpsampleConv2d (the replicate form: the conv at the input resolution) at scale 2 (also
  with the stacked form forced, what a 1x1 kernel ran before) and at scales 1, 3, 4, forward and
  forward + backward; then a public-style ResNet SNGAN-32 generator (3 residual up-blocks,
  256 channels, written here) eager vs ``ganx.fuse(G)``, forward + backward and forward.
* **profile**: torch.profiler over drop-in steps of the resize-conv DCGAN at 32 px, the time
  split into D's convolutions (forward, backward), G's fused layers, BatchNorm, activations,
  Adam, the rest; with the step's multiply-add count and the machine's float32 GEMM rate on
  the same threads (a 2048^3 ``torch.mm``), so the fastest step the arithmetic allows, and so
  the largest possible speed-up over the unmodified script, can be read off.

Results: benchmarks/results/dropin-<device>-<date>.{md,json}, with the machine, the date and
the load average (``uptime``) before and after every part.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import ganx  # noqa: E402
import dcgan_convtranspose  # noqa: E402
import dcgan_resize_conv as ex  # noqa: E402


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f}"


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout
        return sha.strip() + ("+dirty" if dirty.strip() else "")
    except OSError:
        return "?"


def alternate(fns, turns, reps):
    """Each fn timed for reps calls per turn, turns alternating. Returns, per fn, the median
    wall time, the median per-turn wall-time ratio to fns[0] with its min-max, and the same
    for process CPU time (all threads: on a shared machine the work done, less the time spent
    waiting for a core)."""
    for f in fns:
        f()  # warm-up
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(turns):
        for f, w, c in zip(fns, wall, cpu):
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(reps):
                f()
            w.append((time.perf_counter() - t0) / reps)
            c.append((time.process_time() - c0) / reps)

    def stats(times):
        med = [statistics.median(t) for t in times]
        per_turn = [[t0 / ti for t0, ti in zip(times[0], t)] for t in times]
        return med, [statistics.median(r) for r in per_turn], [(min(r), max(r)) for r in per_turn]
    return stats(wall), stats(cpu)


# ----------------------------------------------------------------- per training step

def step_contenders(name, size, batch, nz, width, nc):
    make_g = ex.generator if name == "resize-conv" else dcgan_convtranspose.generator
    torch.manual_seed(0)
    G, D = make_g(nz, width, nc, size), ex.discriminator(width, nc, size)
    crit = nn.BCELoss()
    data = torch.rand(4 * batch, nc, size, size) * 2 - 1
    G_f, g_rep = ganx.fuse(G)
    D_l, crit_l, d_rep = ganx.logits_and_bce(D, crit)
    d_loss = ganx.nn.DiscriminatorBCELoss()

    def plain(G, D, oG, oD, real):
        return ex.train_step(G, D, oG, oD, crit, real, nz)

    def dropin(G, D, oG, oD, real):
        return ex.train_step_dropin(G, D, oG, oD, crit_l, real, nz, d_loss)

    def dropin_frozen_d(G, D, oG, oD, real):
        """The drop-in, plus a plain-PyTorch change that is not ganx's: D's parameters do not
        require grad during the G step (their gradients there are discarded by the next
        optD.zero_grad anyway), so D's weight gradients are not computed for it."""
        n = real.shape[0]
        fake = G(torch.randn(n, nz))
        oD.zero_grad(set_to_none=True)
        d_loss(D(real), D(fake.detach())).backward()
        oD.step()
        oG.zero_grad(set_to_none=True)
        D.requires_grad_(False)
        crit_l(D(fake), torch.ones(n, 1)).backward()
        D.requires_grad_(True)
        oG.step()

    rows = [("unmodified script", ex.Timed(G, D, plain)),
            ("ganx.fuse(G) only", ex.Timed(G_f, D, plain)),
            ("drop-in: fuse(G) + logits_and_bce(D) + DiscriminatorBCELoss", ex.Timed(G_f, D_l, dropin)),
            ("drop-in + D frozen in the G step (plain PyTorch, not ganx)", ex.Timed(G_f, D_l, dropin_frozen_d))]
    reports = {"fuse": str(g_rep), "logits_and_bce": str(d_rep)}
    if name == "convtranspose":
        G_ff, rep2 = ganx.fuse(G, where_slower="fuse")
        rows.append(("drop-in with where_slower='fuse' (declined by default on the CPU)",
                     ex.Timed(G_ff, D_l, dropin)))
        reports["fuse where_slower='fuse'"] = str(rep2)
    state = {"i": 0}
    batches = [data[i * batch:(i + 1) * batch] for i in range(4)]

    def runner(t):
        def f():
            t.step(t.G, t.D, t.optG, t.optD, batches[state["i"] % 4])
            state["i"] += 1
        return f
    return rows, [runner(t) for _, t in rows], reports


# ----------------------------------------------------------------- per layer

def layer_cases(batch, width, nc):
    w = width
    cases = []
    for cin, cout, h, act in [(8 * w, 4 * w, 4, None), (4 * w, 2 * w, 8, None), (2 * w, w, 16, None), (w, nc, 32, "tanh")]:
        ref = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
        ref_seq = nn.Sequential(ref, nn.Tanh()) if act else ref
        fused = ganx.nn.FusedConvTranspose2d(cin, cout, bias=False, activation=act)
        fused.weight = ref.weight
        label = f"ConvTranspose2d(4,2,1){' + Tanh' if act else ''} N{batch} {cin}->{cout}ch {h}->{2 * h}px"
        cases.append((label, "nn.ConvTranspose2d", "ganx FusedConvTranspose2d", ref_seq, fused, (batch, cin, h, h)))
    for cin, cout, h, act in [(4 * w, 2 * w, 4, None), (2 * w, w, 8, None), (w, nc, 16, "tanh")]:
        conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=act is not None)
        ref = nn.Sequential(nn.Upsample(scale_factor=2), conv, *([nn.Tanh()] if act else []))
        fused = ganx.nn.UpsampleConv2d(cin, cout, 3, 2, bias=act is not None, activation=act)
        fused.weight = conv.weight
        if act:
            fused.bias = conv.bias
        label = f"Upsample(2) + Conv2d(3x3){' + Tanh' if act else ''} N{batch} {cin}->{cout}ch {h}->{2 * h}px"
        cases.append((label, "nn.Upsample + nn.Conv2d", "ganx UpsampleConv2d", ref, fused, (batch, cin, h, h)))
    # the scales and kernels fuse decides on by device (the policy in ganx/convert/_fuse.py)
    for k, sc, n, cin, cout, h in [(1, 2, batch, w, w // 4 or 1, 16), (5, 2, batch, w, w, 16), (3, 1, 16, w, w, 16),
                                   (3, 3, 16, w, w // 2 or 1, 16), (3, 4, 16, w, w // 2 or 1, 8)]:
        conv = nn.Conv2d(cin, cout, k, 1, k // 2)
        ref = nn.Sequential(nn.Upsample(scale_factor=sc), conv)
        fused = ganx.nn.UpsampleConv2d(cin, cout, k, sc)
        fused.weight, fused.bias = conv.weight, conv.bias
        label = f"Upsample({sc}) + Conv2d({k}x{k}) N{n} {cin}->{cout}ch {h}->{sc * h}px"
        cases.append((label, "nn.Upsample + nn.Conv2d", "ganx UpsampleConv2d", ref, fused, (n, cin, h, h)))
    return cases


def fwd_bwd(m, shape):
    x = torch.randn(shape, requires_grad=True)
    g = torch.randn_like(m(x))

    def f():
        out = m(x)
        out.backward(g)
        x.grad = None
        for p in m.parameters():
            p.grad = None
    return f


# ----------------------------------------------------------------- algorithms (the CPU rule)

ALGOS = ("deconv", "stacked", "split")


def algo_cases(batch, width, nc):
    """The resize-conv generators' UpsampleConv2d layers (32 px and 64 px models)."""
    w = width
    return [(4 * w, 2 * w, 4, None), (2 * w, w, 8, None), (w, nc, 16, "tanh"),
            (8 * w, 4 * w, 4, None), (w, nc, 32, "tanh")]


def time_algos(cin, cout, h, act, batch, turns, reps):
    """CPU time (process, all threads) and wall time per call of the forward and of the backward
    under each forced algorithm, alternating; plus what the rule picks in each direction."""
    from ganx.ops import upconv_algorithm, upconv_algorithm_choices
    m = ganx.nn.UpsampleConv2d(cin, cout, 3, 2, bias=act is not None, activation=act)
    x = torch.randn(batch, cin, h, h, requires_grad=True)
    g = torch.randn(batch, cout, 2 * h, 2 * h)
    ganx._C.clear_upconv_algorithm_choices()
    m(x).backward(g)
    picked = {}
    for c in upconv_algorithm_choices():
        if c["source"] == "rule" and f"x[{batch}, {cin}, {h}, {h}] c_out={cout} " in c["key"]:
            picked[c["key"].split()[1]] = c["algorithm"]

    def fwd(a):
        def f():
            with upconv_algorithm(a):
                m(x)
        return f

    def bwd(a):
        with upconv_algorithm(a):
            y = m(x)

        def f():
            with upconv_algorithm(a):
                y.backward(g, retain_graph=True)
        return f
    out = {"layer": f"Upsample(2) + Conv2d(3x3){' + Tanh' if act else ''} N{batch} {cin}->{cout}ch {h}->{2 * h}px",
           "rule": picked}
    for name, mk in (("forward", fwd), ("backward", bwd)):
        (wmed, _, _), (cmed, _, _) = alternate([mk(a) for a in ALGOS], turns, reps)
        out[name] = {a: {"cpu_ms": c * 1e3, "wall_ms": wv * 1e3} for a, c, wv in zip(ALGOS, cmed, wmed)}
    return out


# ----------------------------------------------------------------- ResNet generators (issue 23)

class ResBlockUp(nn.Module):
    """The residual up-block of the public SNGAN / WGAN-GP ResNet generators (written here from
    their description): BN-ReLU-Upsample-conv3x3-BN-ReLU-conv3x3, plus an Upsample-conv1x1
    shortcut."""

    def __init__(self, c):
        super().__init__()
        self.main = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 3, 1, 1),
                                  nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 1))

    def forward(self, x):
        return self.main(x) + self.shortcut(x)


class ResNetG32(nn.Module):
    """SNGAN-32-style generator: z -> 4x4xch -> 3 up-blocks -> 32x32 -> BN-ReLU-conv3x3-Tanh."""

    def __init__(self, nz=128, ch=256):
        super().__init__()
        self.ch = ch
        self.l1 = nn.Linear(nz, 4 * 4 * ch)
        self.blocks = nn.Sequential(ResBlockUp(ch), ResBlockUp(ch), ResBlockUp(ch))
        self.final = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.final(self.blocks(self.l1(z).view(-1, self.ch, 4, 4)))


def _fwd(m, x):
    def f():
        with torch.no_grad():
            m(x)
    return f


def resnet_cases(batch, width, quick):
    """(label, direction, contender names, fns, report) per row: the shortcut layer (a 1x1
    upsample-conv) at scale 2 -- with ganx's stacked form forced, the form a 1x1 kernel took
    before the replicate form, for comparison -- and at scales 1, 3, 4 (what ``fuse`` decides on
    the CPU), forward and forward + backward; then the ResNet generator, eager vs ganx.fuse."""
    from ganx.ops import upconv_algorithm
    c, h = width, 16 if not quick else 4
    rows = []
    for sc in ([2] if quick else [2, 1, 3, 4]):
        conv = nn.Conv2d(c, c, 1)
        ref = nn.Sequential(nn.Upsample(scale_factor=sc), conv)
        fused = ganx.nn.UpsampleConv2d(c, c, 1, sc)
        fused.weight, fused.bias = conv.weight, conv.bias
        label = f"Upsample({sc}) + Conv2d(1x1) N{batch} {c}->{c}ch {h}->{sc * h}px"
        x = torch.randn(batch, c, h, h)

        def stacked(fn):
            def f():
                with upconv_algorithm("stacked"):
                    fn()
            return f
        for direction, mk in (("forward", _fwd), ("forward+backward", fwd_bwd)):
            arg = x if direction == "forward" else x.shape
            names = ["nn.Upsample + nn.Conv2d", "ganx UpsampleConv2d (replicate)"]
            fns = [mk(ref, arg), mk(fused, arg)]
            if sc == 2:
                names.append("ganx UpsampleConv2d, stacked form forced (before)")
                fns.append(stacked(mk(fused, arg)))
            rows.append((label, direction, names, fns, ""))
    torch.manual_seed(0)
    G = ResNetG32(ch=c).train()
    G_f, rep = ganx.fuse(G)
    z = torch.randn(batch, 128)
    g_out = torch.randn(batch, 3, 32, 32)

    def step(m):
        def f():
            m(z).backward(g_out)
            for p in m.parameters():
                p.grad = None
        return f
    label = f"ResNet SNGAN-32 G (3 up-blocks, {c} ch) N{batch}"
    rows.append((label, "forward+backward", ["eager", "ganx.fuse(G)"], [step(G), step(G_f)], str(rep)))
    rows.append((label, "forward", ["eager", "ganx.fuse(G)"], [_fwd(G, z), _fwd(G_f, z)], ""))
    return rows


# ----------------------------------------------------------------- profile of the drop-in step

def sgemm_rate(n=2048, reps=3):
    """float32 GEMM rate on this process's threads: multiply-adds x 2 per second (wall) and per
    CPU-second (the rate of one busy thread, which a loaded machine leaves nearly intact)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    wall = cpu = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return 2 * n ** 3 / wall / 1e9, 2 * n ** 3 / cpu / 1e9


def step_gflop(G, D, batch, nz, size, nc, fused):
    """Floating-point operations of one training step (2 per multiply-add): torch's FlopCounterMode
    on the unmodified script's step, with G's convolutions at 4/9 of their count when ``fused``
    (a 3x3 kernel on a 2x-upsampled map folds into four 2x2 phase kernels on the input)."""
    from torch.utils.flop_counter import FlopCounterMode
    t = ex.Timed(G, D, lambda G_, D_, oG, oD, r: ex.train_step(G_, D_, oG, oD, nn.BCELoss(), r, nz))
    real = torch.rand(batch, nc, size, size)
    z = torch.randn(batch, nz)
    with FlopCounterMode(display=False) as fc:
        t.step(t.G, t.D, t.optG, t.optD, real)
    total = fc.get_total_flops()
    with FlopCounterMode(display=False) as fg:
        t.G(z).sum().backward()
    g_conv = sum(v for k, v in fg.get_flop_counts()["Global"].items() if "convolution" in str(k))
    return (total - (g_conv * 5 / 9 if fused else 0)) / 1e9, total / 1e9


_PROFILE_BINS = [("G: ganx UpsampleConv2d, forward + backward", ("ganx::upsample_conv2d",)),
                 ("loss: ganx BCE ops", ("ganx::bce",)),
                 ("D: Conv2d backward (incl. its input copies)", ("convolution_backward",)),
                 ("D: Conv2d forward", ("aten::convolution", "aten::mkldnn_convolution")),
                 ("BatchNorm, forward + backward", ("batch_norm",)),
                 ("Adam", ("Optimizer.step",)),
                 ("activations, forward + backward", ("leaky_relu", "threshold", "relu", "tanh")),
                 ("G: Linear", ("addmm", "aten::mm", "aten::linear"))]


def profile_step(batch, width, steps):
    """Self time of every profiled op of drop-in steps (resize-conv DCGAN 32 px), binned by the
    nearest enclosing op that names a part."""
    from torch.profiler import ProfilerActivity, profile
    rows, fns, _ = step_contenders("resize-conv", 32, batch, 100, width, 3)
    f = fns[2]  # the whole drop-in
    f()
    f()
    with profile(activities=[ProfilerActivity.CPU]) as p:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            f()
        wall, cpu = (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
    bins = {name: 0.0 for name, _ in _PROFILE_BINS}
    bins["other"] = 0.0
    for e in p.events():
        names, q = [], e
        while q is not None:
            names.append(q.name)
            q = q.cpu_parent
        chain = " ".join(names)
        key = next((name for name, keys in _PROFILE_BINS if any(k in chain for k in keys)), "other")
        bins[key] += e.self_cpu_time_total
    total = sum(bins.values()) or 1.0
    return {"contender": rows[2][0], "profiled_wall_ms": wall * 1e3, "profiled_cpu_ms": cpu * 1e3,
            "bins": [{"part": k, "share": v / total} for k, v in sorted(bins.items(), key=lambda kv: -kv[1])]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--turns", type=int, default=5, help="alternating turns per contender, x2 (default 5: 10 turns "
                    "of one step each, or of 3 layer calls)")
    ap.add_argument("--quick", action="store_true", help="tiny models, 1 turn: checks the script, measures nothing")
    ap.add_argument("--parts", default="step,layer", help="comma list of: step, layer, algo, resnet, profile")
    ap.add_argument("--resnet-batch", type=int, default=16, help="batch of the resnet part (default 16)")
    ap.add_argument("--resnet-width", type=int, default=256, help="channels of the resnet part (default 256)")
    ap.add_argument("--tag", default="", help="suffix for the result file names")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="directory, or - for none")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    batch, width, turns = (4, 4, 1) if a.quick else (a.batch, a.width, a.turns)
    now = datetime.datetime.now(datetime.timezone.utc)
    head = {"device": f"{cpu_name()} ({a.threads} threads)", "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "torch": torch.__version__, "ganx_commit": commit(), "python": platform.python_version(),
            "command": "bench_dropin.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "batch": batch, "width": width, "turns": turns, "load_start": load(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp's default, spin then sleep)")}
    parts = a.parts.split(",")
    res = {"header": head, "steps": [], "layers": [], "algos": [], "resnet": [], "profile": None}
    print(f"# {head['device']}, torch {head['torch']}, ganx {head['ganx_commit']}, load {head['load_start']}")
    if "step" in parts:
        for name, size in [("resize-conv", 32), ("convtranspose", 64)]:
            l0 = load()
            rows, fns, reports = step_contenders(name, size, batch, 100, width, 3)
            (med, ratios, spread), (cmed, cratios, cspread) = alternate(fns, turns * 2, 1)
            entry = {"model": f"{name} DCGAN {size} px", "load_before": l0, "load_after": load(), "reports": reports,
                     "rows": [{"contender": r[0], "step_ms": m * 1e3, "speedup": q, "speedup_min_max": s,
                               "cpu_ms": cm * 1e3, "cpu_speedup": cq, "cpu_speedup_min_max": cs}
                              for r, m, q, s, cm, cq, cs in zip(rows, med, ratios, spread, cmed, cratios, cspread)]}
            res["steps"].append(entry)
            print(f"## {entry['model']} (load {l0} -> {entry['load_after']})")
            for r in entry["rows"]:
                print(f"  {r['contender']:<70} {r['step_ms']:8.1f} ms  {r['speedup']:.2f}x   cpu {r['cpu_ms']:8.1f} ms "
                      f"{r['cpu_speedup']:.2f}x", flush=True)
    if "layer" in parts:
        for label, ref_name, f_name, ref, fused, shape in layer_cases(batch, width, 3):
            l0 = load()
            (med, ratios, spread), (cmed, cratios, cspread) = alternate(
                [fwd_bwd(ref, shape), fwd_bwd(fused, shape)], turns * 2, 1 if a.quick else 3)
            e = {"layer": label, "reference": ref_name, "ganx": f_name, "ref_ms": med[0] * 1e3, "ganx_ms": med[1] * 1e3,
                 "speedup": ratios[1], "speedup_min_max": spread[1], "cpu_speedup": cratios[1],
                 "cpu_speedup_min_max": cspread[1], "load_before": l0, "load_after": load()}
            res["layers"].append(e)
            print(f"  {label:<60} {ref_name} {e['ref_ms']:.2f} ms, {f_name} {e['ganx_ms']:.2f} ms: {e['speedup']:.2f}x"
                  f" (cpu time {e['cpu_speedup']:.2f}x)  (load {l0})", flush=True)
    if "algo" in parts:
        for cin, cout, h, act in algo_cases(batch, width, 3):
            l0 = load()
            e = time_algos(cin, cout, h, act, batch, turns * 2, 1 if a.quick else 3)
            e["load_before"] = l0
            res["algos"].append(e)
            print(f"  {e['layer']:<56} rule fwd {e['rule'].get('forward', '?')}, bwd {e['rule'].get('backward', '?')};"
                  + "".join(f"  {d[:3]} " + " ".join(f"{al} {e[d][al]['cpu_ms']:.1f}" for al in ALGOS)
                            for d in ("forward", "backward")) + f" ms cpu (load {l0})", flush=True)
    if "resnet" in parts:
        for label, direction, names, fns, rep in resnet_cases(a.resnet_batch if not a.quick else 2,
                                                             a.resnet_width if not a.quick else 8, a.quick):
            l0 = load()
            (med, ratios, spread), (cmed, cratios, cspread) = alternate(fns, turns * 2, 1 if a.quick else 3)
            e = {"case": label, "direction": direction, "load_before": l0, "load_after": load(), "report": rep,
                 "rows": [{"contender": n, "ms": m * 1e3, "speedup": q, "speedup_min_max": sp, "cpu_ms": cm * 1e3,
                           "cpu_speedup": cq} for n, m, q, sp, cm, cq in zip(names, med, ratios, spread, cmed, cratios)]}
            res["resnet"].append(e)
            print(f"  {label:<52} {direction:<16} " + ", ".join(
                f"{r['contender']} {r['ms']:.2f} ms ({r['speedup']:.2f}x)" for r in e["rows"]) + f"  (load {l0})",
                flush=True)
    if "profile" in parts:
        l0 = load()
        torch.manual_seed(0)
        G, D = ex.generator(100, width, 3, 32), ex.discriminator(width, 3, 32)
        gf_fused, gf_plain = step_gflop(G, D, batch, 100, 32, 3, fused=True)
        rate_wall, rate_cpu = sgemm_rate(256 if a.quick else 2048)
        prof = profile_step(batch, width, 1 if a.quick else 4)
        prof.update({"load_before": l0, "load_after": load(), "step_gflop_dropin": gf_fused,
                     "step_gflop_unmodified": gf_plain, "sgemm_gflops_wall": rate_wall,
                     "sgemm_gflops_per_cpu_second": rate_cpu, "threads": a.threads})
        res["profile"] = prof
        print(f"## profile of the drop-in step, resize-conv 32 px (load {l0}): {gf_fused:.1f} GFLOP per step "
              f"(unmodified {gf_plain:.1f}); sgemm {rate_cpu:.0f} GFLOP/s per CPU-second")
        for b in prof["bins"]:
            print(f"  {b['share'] * 100:5.1f}%  {b['part']}")
    head["load_end"] = load()
    if a.out != "-":
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"dropin-cpu-{a.threads}core-{now.strftime('%Y-%m-%d')}{'-quick' if a.quick else ''}{'-' + a.tag if a.tag else ''}"
        Path(f"{stem}.json").write_text(json.dumps(res, indent=1))
        Path(f"{stem}.md").write_text(markdown(res))
        print(f"wrote {stem}.md and .json")
    return 0


def markdown(res) -> str:
    h = res["header"]
    lines = [f"# The ganx drop-in on DCGAN scripts: CPU, batch {h['batch']}, float32", "",
             f"- device: {h['device']}; date: {h['date']}; torch {h['torch']}; ganx @ {h['ganx_commit']}",
             f"- load average (uptime, 1/5/15 min): start {h['load_start']}, end {h.get('load_end', '?')}; the machine "
             "is shared, so every number is a median over turns in which the contenders alternated, and each "
             "speed-up is the median of per-turn ratios (min-max in brackets); CPU time is the process's (all "
             "threads), which on a busy machine leaves out the time spent waiting for a core",
             f"- command: `python benchmarks/{h['command']}`; {2 * h['turns']} alternating turns per contender; "
             f"OMP_WAIT_POLICY={h['omp_wait_policy']}", ""]
    if res["steps"]:
        lines += ["## Per training step (D update on real + fake, G update, Adam; latent 100, width "
                  f"{h['width']}, RGB)", ""]
        for e in res["steps"]:
            lines += [f"### {e['model']} (load {e['load_before']} -> {e['load_after']})", "",
                      "| contender | step time (wall) | speed-up over the unmodified script (wall) | CPU time "
                      "per step | speed-up (CPU time) |", "|---|---|---|---|---|"]
            for r in e["rows"]:
                lo, hi = r["speedup_min_max"]
                clo, chi = r["cpu_speedup_min_max"]
                lines.append(f"| {r['contender']} | {r['step_ms']:.1f} ms | **{r['speedup']:.2f}x** ({lo:.2f}-{hi:.2f}) "
                             f"| {r['cpu_ms']:.1f} ms | {r['cpu_speedup']:.2f}x ({clo:.2f}-{chi:.2f}) |")
            lines += ["", "```"] + [v for v in e["reports"].values()] + ["```", ""]
    if res["layers"]:
        lines += ["## Per layer (forward + backward)", "",
                  "| layer | reference | ganx | reference time | ganx time | ganx speed-up (wall) | (CPU time) | load |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in res["layers"]:
            lo, hi = e["speedup_min_max"]
            clo, chi = e["cpu_speedup_min_max"]
            lines.append(f"| {e['layer']} | {e['reference']} | {e['ganx']} | {e['ref_ms']:.2f} ms | {e['ganx_ms']:.2f} ms "
                         f"| {e['speedup']:.2f}x ({lo:.2f}-{hi:.2f}) | {e['cpu_speedup']:.2f}x ({clo:.2f}-{chi:.2f}) "
                         f"| {e['load_before']} |")
        lines.append("")
    if res.get("algos"):
        lines += ["## ganx's CPU compositions per generator layer (forced; the CPU rule's evidence)", "",
                  "CPU time per call (process, all threads; wall in brackets), forward and backward apart; "
                  "**bold**: what the static rule picks (csrc/upsample_conv2d.cpp, `rule`).", "",
                  "| layer | direction | " + " | ".join(ALGOS) + " | load |", "|---|---|" + "---|" * len(ALGOS) + "---|"]
        for e in res["algos"]:
            for d in ("forward", "backward"):
                cells = []
                for al in ALGOS:
                    c = f"{e[d][al]['cpu_ms']:.1f} ms ({e[d][al]['wall_ms']:.1f})"
                    cells.append(f"**{c}**" if e["rule"].get(d) == al else c)
                lines.append(f"| {e['layer']} | {d} | " + " | ".join(cells) + f" | {e['load_before']} |")
        lines.append("")
    if res.get("resnet"):
        lines += ["## ResNet generator layers and the generator (issue 23: the 1x1 shortcut)", "",
                  "Speed-up: the median of per-turn ratios of the first contender's time (eager PyTorch) to each "
                  "contender's (min-max in brackets); forward rows run under `torch.no_grad()`.", "",
                  "| case | direction | contender | time (wall) | speed-up over eager | CPU time | load |",
                  "|---|---|---|---|---|---|---|"]
        for e in res["resnet"]:
            for r in e["rows"]:
                lo, hi = r["speedup_min_max"]
                lines.append(f"| {e['case']} | {e['direction']} | {r['contender']} | {r['ms']:.2f} ms | "
                             f"**{r['speedup']:.2f}x** ({lo:.2f}-{hi:.2f}) | {r['cpu_ms']:.2f} ms | {e['load_before']} |")
        lines.append("")
        reps = [e["report"] for e in res["resnet"] if e["report"]]
        if reps:
            lines += ["```"] + reps + ["```", ""]
    p = res.get("profile")
    if p:
        thr = p["threads"]
        peak = p["sgemm_gflops_per_cpu_second"] * thr
        best_ms = p["step_gflop_dropin"] / peak * 1e3
        lines += [f"## Where the drop-in step goes (resize-conv DCGAN 32 px; load {p['load_before']} -> {p['load_after']})",
                  "", f"torch.profiler over the drop-in's steps ({p['profiled_wall_ms']:.1f} ms wall, "
                  f"{p['profiled_cpu_ms']:.1f} ms CPU per step while profiled); share of the ops' self time:", "",
                  "| part | share |", "|---|---|"]
        lines += [f"| {b['part']} | {b['share'] * 100:.1f}% |" for b in p["bins"]]
        lines += ["", f"Arithmetic: {p['step_gflop_dropin']:.1f} GFLOP per drop-in step (unmodified script "
                  f"{p['step_gflop_unmodified']:.1f}; torch's FlopCounterMode, G's convolutions at 4/9). float32 "
                  f"GEMM on this machine: {p['sgemm_gflops_per_cpu_second']:.0f} GFLOP/s per busy thread "
                  f"({p['sgemm_gflops_wall']:.0f} GFLOP/s wall on {thr} threads at this load), so the drop-in step "
                  f"cannot take less than {best_ms:.0f} ms on {thr} threads even at the GEMM rate, and at that "
                  f"bound its speed-up over an unmodified step of T ms is T / {best_ms:.0f}."]
        rc = {r["contender"]: r["cpu_ms"] for e in res.get("steps", []) if e["model"].startswith("resize-conv")
              for r in e["rows"]}
        dropin = next((k for k in rc if k.startswith("drop-in: ")), None)
        if "unmodified script" in rc and dropin:
            gemm = p["sgemm_gflops_per_cpu_second"]
            r_u = p["step_gflop_unmodified"] / (rc["unmodified script"] / 1e3)
            r_d = p["step_gflop_dropin"] / (rc[dropin] / 1e3)
            need = 2.0 * p["step_gflop_dropin"] / p["step_gflop_unmodified"] * r_u
            lines[-1] += (f" Per CPU-second (the step part above, same run): the unmodified script does "
                          f"{r_u:.0f} GFLOP/s ({r_u / gemm * 100:.0f}% of the GEMM rate), the drop-in {r_d:.0f} "
                          f"({r_d / gemm * 100:.0f}%). A speed-up S needs the drop-in at S x "
                          f"{p['step_gflop_dropin']:.1f} / {p['step_gflop_unmodified']:.1f} of the unmodified "
                          f"script's rate: 2.0x needs {need:.0f} GFLOP/s, **{need / gemm * 100:.0f}% of the GEMM "
                          f"rate**; at 100% of it the drop-in would be "
                          f"**{gemm / r_u * p['step_gflop_unmodified'] / p['step_gflop_dropin']:.2f}x**.")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
