"""``ganx bench``: a quick timer of the fused ops against eager PyTorch on this machine's CPU
(about a minute). It answers "are the fused kernels faster here?":

- ``upsample_conv2d`` on the 4 DCGAN generator layers (DCGAN-64 generator blocks 1-3 at batch 64,
  the 32 px block of a half-width DCGAN-128 generator at batch 16) against eager
  ``Upsample + Conv2d``, forward and forward+backward;
- the BCE discriminator loss at 64 and 1M logits against eager
  ``binary_cross_entropy_with_logits``, forward+backward.

Every fused result is checked against eager before it is timed (median of blocks of calls,
``time.perf_counter``). The full suites (CUDA, torch.compile, the folded conv_transpose2d,
more shapes, saved results and plots) are the scripts in the repository's ``benchmarks/``.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ganx._version import __version__
from ganx.ops import bce, upsample_conv

__all__ = ["run_quick", "LAYERS"]

# (label, N, C_in, C_out, H): x is (N, C_in, H, H), the output (N, C_out, 2H, 2H).
LAYERS = (
    ("DCGAN-64 G block 1", 64, 512, 256, 4),
    ("DCGAN-64 G block 2", 64, 256, 128, 8),
    ("DCGAN-64 G block 3", 64, 128, 64, 16),
    ("DCGAN-128 (ngf 32) G block 4", 16, 64, 32, 32),
)
TINY_LAYERS = (("tiny", 2, 8, 4, 4),)
LOSS_SIZES = (64, 1 << 20)


def _eager_upsample_conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, None, padding=1)


def _eager_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def _median(fn: Callable[[], object], min_time: float) -> float:
    """Median seconds per call of ``fn``: after a warm-up, blocks of calls (each at least 1 ms, so
    the clock's resolution does not matter) for ``min_time`` seconds and at least 5 blocks."""
    for _ in range(3):  # first calls pay for lazy initialisation and first-touch allocations
        fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= 1e-3:
            break
        n *= 4
    times: List[float] = []
    deadline = time.perf_counter() + min_time
    while len(times) < 5 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def _fwd(fwd: Callable[..., torch.Tensor], inputs: Tuple[torch.Tensor, ...]) -> Callable[[], object]:
    def step():
        with torch.no_grad():
            fwd(*inputs)
    return step


def _fwd_bwd(fwd: Callable[..., torch.Tensor], inputs: Tuple[torch.Tensor, ...]) -> Callable[[], object]:
    def step():
        out = fwd(*inputs)
        torch.autograd.grad(out.sum(), [t for t in inputs if t.requires_grad])
    return step


def _check(what: str, got: torch.Tensor, ref: torch.Tensor) -> None:
    if not torch.allclose(got, ref, rtol=1e-4, atol=1e-4):
        err = (got - ref).abs().max().item()
        raise AssertionError(f"ganx bench: {what}: the fused result differs from eager by {err:.3g}; not timed")


def _cases(tiny: bool):
    """(op, shape label, phase, fused fn, eager fn) for every timed case, checked first."""
    g = torch.Generator().manual_seed(0)
    for label, n, ci, co, h in TINY_LAYERS if tiny else LAYERS:
        x = torch.randn(n, ci, h, h, generator=g).requires_grad_(True)
        w = (torch.randn(co, ci, 3, 3, generator=g) * 0.02).requires_grad_(True)
        fused, eager = upsample_conv.upsample_conv2d, _eager_upsample_conv
        _check(f"upsample_conv2d {label}", fused(x, w), eager(x, w))
        shape = f"{label}: N{n} {ci}->{co}ch {h}->{2 * h}px"
        yield "upsample_conv2d", shape, "fwd", _fwd(fused, (x, w)), _fwd(eager, (x, w))
        yield "upsample_conv2d", shape, "fwd+bwd", _fwd_bwd(fused, (x, w)), _fwd_bwd(eager, (x, w))
    for size in (64, 4096) if tiny else LOSS_SIZES:
        real = torch.randn(size, generator=g).requires_grad_(True)
        fake = torch.randn(size, generator=g).requires_grad_(True)
        fused_d, eager_d = bce.bce_discriminator_loss, _eager_d_loss
        _check(f"bce_discriminator_loss at {size} logits", fused_d(real, fake), eager_d(real, fake))
        yield ("bce_discriminator_loss", f"{size:,} + {size:,} logits", "fwd+bwd",
               _fwd_bwd(fused_d, (real, fake)), _fwd_bwd(eager_d, (real, fake)))


def run_quick(out_dir: Optional[Union[str, os.PathLike]] = None, threads: Optional[int] = None,
              min_time: float = 0.2, tiny: bool = False) -> str:
    """Times the fused ops against eager on the CPU and returns the Markdown report.

    Args:
        out_dir: where to also write the report as ``bench-cpu-<date>.md`` and ``.json``; None
            writes nothing.
        threads: CPU threads for torch (default: torch's default).
        min_time: seconds of timing per contender and case.
        tiny: one small layer and small losses only (a smoke test).
    """
    callers_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows: List[Dict[str, object]] = []
    try:
        for op, shape, phase, fused, eager in _cases(tiny):
            t_ganx, t_eager = _median(fused, min_time), _median(eager, min_time)
            rows.append({"op": op, "shape": shape, "phase": phase, "ganx_s": t_ganx, "eager_s": t_eager,
                         "speedup": t_eager / t_ganx})
        used_threads = torch.get_num_threads()
    finally:
        if torch.get_num_threads() != callers_threads:
            torch.set_num_threads(callers_threads)
    conv = [r["speedup"] for r in rows if r["op"] == "upsample_conv2d"]
    env = {"date": datetime.date.today().isoformat(), "ganx": __version__, "torch": torch.__version__,
           "cpu": platform.processor() or platform.machine(), "threads": used_threads,
           "load_average": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}
    busy = (env["load_average"] is not None and env["load_average"] > (os.cpu_count() or 1))
    lines = [f"## ganx bench (CPU, {env['threads']} threads, torch {env['torch']}, ganx {env['ganx']}, "
             f"{env['date']}, load average {env['load_average']})", "",
             *([f"**Warning: the machine was busy** (load average {env['load_average']} on {os.cpu_count()} CPUs): "
                f"other processes took CPU time, so these timings are noisy; rerun on a quiet machine.", ""]
               if busy else []),
             "| op | shape | phase | ganx | eager | speed-up |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['op']} | {r['shape']} | {r['phase']} | {_fmt(r['ganx_s'])} | {_fmt(r['eager_s'])} "
              f"| {r['speedup']:.2f}x |" for r in rows]
    lines += ["", f"upsample_conv2d geometric-mean speed-up over eager: "
                  f"{math.exp(sum(map(math.log, conv)) / len(conv)):.2f}x",
              "(speed-up > 1: ganx is faster; the full suites are in the repository's benchmarks/)"]
    md = "\n".join(lines) + "\n"
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        stem = os.path.join(os.fspath(out_dir), f"bench-cpu-{env['date']}")
        with open(stem + ".md", "w") as f:
            f.write(md)
        with open(stem + ".json", "w") as f:
            json.dump({"env": env, "results": rows}, f, indent=2)
    return md


def _fmt(s: float) -> str:
    return f"{s * 1e6:.1f} us" if s < 1e-3 else f"{s * 1e3:.2f} ms"
