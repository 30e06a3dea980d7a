"""Benchmark of the adversarial losses (BCE, hinge, Wasserstein), forward + backward, from 64 to 16M logits.

Contenders (same logits, dtype and flags):

- ``ganx``: ``ganx.functional.bce_discriminator_loss(real, fake)`` /
  ``bce_generator_loss(fake)`` (one pass; the gradient is made in the forward).
- ``eager``: ``F.binary_cross_entropy_with_logits(real, ones_like(real)) +
  F.binary_cross_entropy_with_logits(fake, zeros_like(fake))`` (generator: one call with ones).
- hinge and WGAN rows (losses ``hinge-*``, ``wgan-*``): ``ganx`` is
  ``ganx.functional.hinge_*`` / ``wasserstein_*`` (the same one-pass kernels), ``eager`` the
  textbook twin: ``relu(1 - real).mean() + relu(1 + fake).mean()`` (hinge D),
  ``fake.mean() - real.mean()`` (WGAN D), ``-fake.mean()`` (G, both).
- ``compile``: ``torch.compile`` of the eager function (default mode).
- ``compile-reduce-overhead`` (CUDA only): ``mode="reduce-overhead"`` (CUDA graphs), called
  after ``torch.compiler.cudagraph_mark_step_begin()`` as a training loop would.
- ``autograd-floor``: ``real.sum() + fake.sum()`` (generator: ``fake.sum()``), not a loss: the
  least any autograd function costs through the same forward + ``torch.autograd.grad`` path,
  so small-size rows show how much of a time is the framework's and not the loss's. Not
  checked numerically and never a target.

The issue's speed targets are for the discriminator loss (CUDA and CPU); the generator rows
are reported alongside.

Times: ``wall`` = the harness's main timing (CUDA events around back-to-back calls: includes
the host's dispatch cost whenever the host is the bottleneck, as at small sizes); ``device``
= CUDA-graph replay (kernel time only; not for reduce-overhead, which is a graph already).
Bandwidth counts the compulsory traffic: every logit read once and, with backward, every
gradient written once (discriminator fwd+bwd: 4 n elements).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ganx_bench import harness as H

BENCH = "losses"
LOSSES = ("discriminator", "generator", "hinge-discriminator", "hinge-generator", "wgan-discriminator",
          "wgan-generator")
LABELS = {"discriminator": "D", "generator": "G", "hinge-discriminator": "hinge D", "hinge-generator": "hinge G",
          "wgan-discriminator": "WGAN D", "wgan-generator": "WGAN G"}
PHASES = ("fwd", "fwd+bwd")
CONTENDERS = ("ganx", "eager", "compile", "compile-reduce-overhead", "autograd-floor")
UNCHECKED = ("autograd-floor",)  # contenders that compute something else on purpose

# Logit counts and where such a count comes from.
SIZES: Dict[int, str] = {
    64: "batch 64, one logit per image (DCGAN D)",
    256: "batch 256, one logit per image",
    1024: "batch 64 x 4x4 patch logits",
    4096: "batch 16 x 16x16 PatchGAN map",
    16384: "batch 64 x 16x16 PatchGAN map",
    65536: "batch 256 x 16x16 PatchGAN map",
    262144: "batch 64 x 64x64 per-pixel D (U-Net GAN)",
    1048576: "batch 256 x 64x64 per-pixel D",
    4194304: "batch 64 x 256x256 per-pixel D",
    16777216: "batch 256 x 256x256 per-pixel D",
}
TINY_SIZES = (64, 4096)


# --------------------------------------------------------------------------- contenders

def eager_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def eager_g(fake: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


def eager_hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def eager_wgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


def eager_critic_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


EAGER = {"discriminator": eager_d, "generator": eager_g, "hinge-discriminator": eager_hinge_d,
         "hinge-generator": eager_critic_g, "wgan-discriminator": eager_wgan_d, "wgan-generator": eager_critic_g}
GANX = {"discriminator": "bce_discriminator_loss", "generator": "bce_generator_loss",
        "hinge-discriminator": "hinge_discriminator_loss", "hinge-generator": "hinge_generator_loss",
        "wgan-discriminator": "wasserstein_discriminator_loss", "wgan-generator": "wasserstein_generator_loss"}


def is_disc(loss: str) -> bool:
    return loss.endswith("discriminator")


def floor_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return real.sum() + fake.sum()


def floor_g(fake: torch.Tensor) -> torch.Tensor:
    return fake.sum()


def _forward(loss: str, name: str) -> Callable[..., torch.Tensor]:
    import ganx.functional as GF
    eager = EAGER[loss]
    if name == "ganx":
        return getattr(GF, GANX[loss])
    if name == "eager":
        return eager
    if name == "autograd-floor":
        return floor_d if is_disc(loss) else floor_g
    if name == "compile":
        return torch.compile(eager, dynamic=False)
    if name == "compile-reduce-overhead":
        compiled = torch.compile(eager, mode="reduce-overhead", dynamic=False)

        def run(*a):
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: earlier outputs may be reused
            return compiled(*a)
        return run
    raise ValueError(f"unknown contender {name!r}; choose from {CONTENDERS}")


def make_inputs(loss: str, n: int, ctx: H.Context) -> Tuple[torch.Tensor, ...]:
    # Logits spread like a discriminator's in training: both signs, some saturated (|l| > 10).
    g = torch.Generator(device="cpu").manual_seed(n)
    real = (torch.randn(n, generator=g) * 4 + 1).to(ctx.device, ctx.dtype)
    fake = (torch.randn(n, generator=g) * 4 - 1).to(ctx.device, ctx.dtype)
    return (real, fake) if is_disc(loss) else (fake,)


def step_fn(fwd: Callable[..., torch.Tensor], inputs: Tuple[torch.Tensor, ...], phase: str) -> Callable[[], Any]:
    if phase == "fwd":
        def run_fwd():
            with torch.no_grad():
                return fwd(*inputs)
        return run_fwd
    leaves = tuple(t.detach().requires_grad_(True) for t in inputs)

    def run_fwd_bwd():
        loss = fwd(*leaves)
        return (loss.detach(), *torch.autograd.grad(loss, leaves))
    return run_fwd_bwd


def compulsory_bytes(loss: str, n: int, phase: str, elem: int) -> int:
    tensors = 2 if is_disc(loss) else 1
    return elem * n * tensors * (2 if phase == "fwd+bwd" else 1)


# --------------------------------------------------------------------------- running

def _outs(x) -> Tuple[torch.Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def run(ctx: H.Context, sizes: Sequence[int], losses: Sequence[str], contenders: Sequence[str],
        phases: Sequence[str], log=print) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
    rows: List[Dict[str, Any]] = []
    notes: Dict[str, str] = {}
    elem = torch.tensor([], dtype=ctx.dtype).element_size()
    tol = H.tolerance(ctx.dtype, False)
    copy_bw = ctx.peaks["copy_bytes_per_s"]
    with H.run_rows(ctx):
        for i, n in enumerate(sizes):
            # --tiny compiles once (on the first size): compilation dominates a smoke test.
            names = [c for c in contenders if not (ctx.tiny and i > 0 and c.startswith("compile"))]
            if any(c.startswith("compile") for c in names):
                H.reset_compile_caches()
            for loss in losses:
                inputs = make_inputs(loss, n, ctx)
                fwds = {c: _forward(loss, c) for c in names}
                for phase in phases:
                    what = ("loss",) if phase == "fwd" else ("loss",) + tuple(
                        f"grad_{a}" for a in (("real", "fake") if is_disc(loss) else ("fake",)))
                    ref = _outs(step_fn(fwds["eager"], inputs, phase)())
                    timed: Dict[str, Tuple[H.Timing, Any]] = {}
                    for c in names:
                        fn = step_fn(fwds[c], inputs, phase)
                        try:
                            got = _outs(fn())
                        except Exception as e:
                            if not c.startswith("compile"):
                                raise
                            notes[f"{loss} n={n} {phase} {c}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                            continue
                        try:
                            err = None if c in UNCHECKED else max(H.check_close(f"{loss} loss n={n} {phase} {c} vs eager: {w}", g, r, tol)
                                      for w, g, r in zip(what, got, ref))
                        except H.NumericsError as e:
                            ctx.failures.append(str(e))
                            log(f"  !! NUMERICS FAILURE, not timed: {e}")
                            continue
                        t = H.time_fn(ctx, fn)
                        if ctx.graphs and c == "compile-reduce-overhead":
                            graph = "is a CUDA graph already"
                        else:
                            graph = H.time_cuda_graph(ctx, fn) if ctx.graphs else None
                        host = H.time_host(ctx, fn, t)
                        mem = H.peak_memory(ctx, fn)
                        timed[c] = (t, graph)
                        by = compulsory_bytes(loss, n, phase, elem)
                        dev_t = graph.median if isinstance(graph, H.Timing) else None
                        rows.append({
                            "loss": loss, "n": n, "source": SIZES.get(n, "custom size"), "phase": phase,
                            "contender": c, "median_s": t.median, "p20_s": t.p20, "p80_s": t.p80, "runs": t.n,
                            "method": t.method, "device_median_s": dev_t,
                            "device_note": graph if isinstance(graph, str) else None, **host,
                            "bytes": by, "gb_per_s": by / t.median / 1e9, "pct_copy_bw": 100 * by / t.median / copy_bw,
                            "device_gb_per_s": by / dev_t / 1e9 if dev_t else None,
                            "device_pct_copy_bw": 100 * by / dev_t / copy_bw if dev_t else None,
                            "peak_mem_bytes": mem, "max_rel_err_vs_eager": err, "speedup_vs": {},  # filled once the row's contenders are timed
                        })
                        log(f"  {loss:13s} n={n:<9d} {phase:7s} {c:24s} {H.fmt_time(t.median):>10s}")
                    for r in rows:
                        if r["loss"] == loss and r["n"] == n and r["phase"] == phase:
                            r["speedup_vs"] = {o: timed[o][0].median / r["median_s"] for o in timed}
                            if r["device_median_s"]:
                                r["device_speedup_vs"] = {o: g.median / r["device_median_s"] for o, (_, g)
                                                          in timed.items() if isinstance(g, H.Timing)}
    return rows, notes


def targets(ctx: H.Context, rows: List[Dict[str, Any]]) -> Tuple[str, List[Dict[str, Any]]]:
    """The issue's targets, each evaluated on this run's fwd+bwd rows: PASS / FAIL / not measured."""
    ganx = {(r["loss"], r["n"]): r for r in rows if r["contender"] == "ganx" and r["phase"] == "fwd+bwd"}
    results = []

    def add(name, ok, detail):
        results.append({"target": name, "status": "not measured" if ok is None else ("PASS" if ok else "FAIL"),
                        "detail": detail})

    for loss in ("discriminator",):  # the targets are the discriminator loss's
        rs = [r for (l, _), r in sorted(ganx.items()) if l == loss]
        if not rs:
            continue
        if not ctx.is_cuda:
            for n in (64, 1048576):
                r = ganx.get((loss, n))
                s = r["speedup_vs"].get("eager") if r else None
                add(f"CPU {loss} n={n}: ganx >= 2x eager", None if s is None else s >= 2,
                    "-" if s is None else f"{s:.2f}x")
            continue
        small = [r for r in rs if r["n"] <= 4096]
        s = [r["speedup_vs"].get("eager") for r in small]
        add(f"CUDA {loss} n<=4096: ganx >= 5x eager (wall)", None if not s else min(s) >= 5,
            ", ".join(f"n={r['n']}: {v:.2f}x" for r, v in zip(small, s)) or "-")
        ro = [(r["n"], r["speedup_vs"].get("compile-reduce-overhead")) for r in rs]
        ro = [(n, v) for n, v in ro if v is not None]
        add(f"CUDA {loss}: ganx no slower than compile reduce-overhead (wall)", None if not ro else min(v for _, v in ro) >= 1.0,
            ", ".join(f"n={n}: {v:.2f}x" for n, v in ro) or "-")
        big = [r for r in rs if r["n"] >= 16 * 2**20]
        add(f"CUDA {loss} n>=16M: ganx >= 80% of copy bandwidth", None if not big else min(r["pct_copy_bw"] for r in big) >= 80,
            ", ".join(f"n={r['n']}: {r['pct_copy_bw']:.0f}%" for r in big) or "-")
    md = ["## Targets (forward+backward)", "",
          H.md_table(["target", "status", "measured"], [[t["target"], t["status"], t["detail"]] for t in results])]
    return "\n".join(md), results


def tables_md(rows: List[Dict[str, Any]], contenders: Sequence[str], cuda: bool) -> str:
    present = [c for c in contenders if any(r["contender"] == c for r in rows)]
    head = ["loss", "logits", "phase", "contender", "wall median", "p20", "p80", *(f"x{c}" for c in present),
            "GB/s", "% copy BW"] + (["device (graph)", "device GB/s", "device % BW"] if cuda else []) + ["peak mem"]
    body = []
    for r in rows:
        body.append([r["loss"], r["n"], r["phase"], r["contender"], H.fmt_time(r["median_s"]),
                     H.fmt_time(r["p20_s"]), H.fmt_time(r["p80_s"]),
                     *(H.fmt_ratio(r["speedup_vs"].get(c)) for c in present),
                     f"{r['gb_per_s']:.3g}", f"{r['pct_copy_bw']:.1f}"]
                    + ([H.fmt_time(r["device_median_s"]) if r["device_median_s"] else (r["device_note"] or "-"),
                        f"{r['device_gb_per_s']:.3g}" if r["device_gb_per_s"] else "-",
                        f"{r['device_pct_copy_bw']:.1f}" if r["device_pct_copy_bw"] else "-"] if cuda else [])
                    + [H.fmt_bytes(r["peak_mem_bytes"])])
    others = [c for c in present if c != "ganx"]
    summ = []
    for r in rows:
        if r["contender"] == "ganx":
            summ.append([r["loss"], r["n"], r["phase"], H.fmt_time(r["median_s"]),
                         *(H.fmt_ratio(r["speedup_vs"].get(o)) for o in others), f"{r['pct_copy_bw']:.1f}"])
    sizes = sorted({r["n"] for r in rows})
    return "\n".join([
        "## ganx speed-up (wall time of contender / wall time of ganx; > 1 means ganx is faster)", "",
        H.md_table(["loss", "logits", "phase", "ganx wall", *(f"vs {o}" for o in others), "% copy BW"], summ), "",
        "## All contenders", "",
        "`xC` = wall time of C / wall time of this row. Wall time includes dispatch (see the header); "
        "GB/s on the compulsory traffic (logits read, gradients written once)."
        + (" Device time = CUDA-graph replay." if cuda else ""), "",
        H.md_table(head, body), "", "Sizes:", "", *(f"- {n}: {SIZES.get(n, 'custom size')}" for n in sizes)])


def plots(ctx: H.Context, rows: List[Dict[str, Any]], contenders: Sequence[str]):
    present = [c for c in contenders if any(r["contender"] == c for r in rows)]

    def bandwidth(base: Path):
        series = {}
        for loss in LOSSES:
            for c in present:
                pts = {r["n"]: r["gb_per_s"] for r in rows if r["loss"] == loss and r["contender"] == c
                       and r["phase"] == "fwd+bwd"}
                if pts:
                    series[f"{LABELS[loss]} {c}"] = pts
        if not series:
            return None
        xs = sorted({n for s in series.values() for n in s})
        return H.plot_lines(base.with_name(base.name + "-bandwidth.png"), xs,
                            {k: [v.get(n) for n in xs] for k, v in series.items()},
                            f"GAN losses fwd+bwd ({ctx.env['device']}, {H.SHORT_DTYPE[ctx.dtype]})",
                            "logits", "GB/s (compulsory traffic, wall time)",
                            {"measured copy bandwidth": ctx.peaks["copy_bytes_per_s"] / 1e9})

    def speedup(base: Path):
        series = {}
        for loss in LOSSES:
            g = {r["n"]: r for r in rows if r["loss"] == loss and r["contender"] == "ganx" and r["phase"] == "fwd+bwd"}
            for c in present:
                if c != "ganx" and g:
                    series[f"{LABELS[loss]}: ganx vs {c}"] = {n: r["speedup_vs"].get(c) for n, r in g.items()}
        if not series:
            return None
        xs = sorted({n for s in series.values() for n in s})
        return H.plot_lines(base.with_name(base.name + "-speedup.png"), xs,
                            {k: [v.get(n) for n in xs] for k, v in series.items()},
                            f"ganx GAN losses speed-up, fwd+bwd ({ctx.env['device']})", "logits",
                            "speed-up (x)", {"1x": 1.0})
    return [bandwidth, speedup]


def parser(default_out: Optional[Path] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark ganx's adversarial losses (BCE, hinge, WGAN; discriminator and generator) against "
                    "their eager twins and torch.compile, forward+backward, 64 to 16M logits.")
    H.add_common_args(p, default_out=default_out, default_cache="warm")
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated subset of {','.join(CONTENDERS)} (default: all; reduce-overhead on CUDA only)")
    p.add_argument("--sizes", default=None, help="comma-separated logit counts (default 64 .. 16M in powers of 4)")
    p.add_argument("--losses", default=",".join(LOSSES), help=f"comma-separated subset of {','.join(LOSSES)}")
    p.add_argument("--phases", default="fwd+bwd", help="comma-separated subset of fwd,fwd+bwd (default fwd+bwd)")
    return p


def run_main(argv: Optional[Sequence[str]] = None, default_out: Optional[Path] = None, echo: bool = True) -> str:
    """Parses ``argv``, checks, times, writes the results; returns the Markdown report."""
    args = parser(default_out).parse_args(argv)
    ctx = H.setup(BENCH, args)
    contenders = (args.contenders.split(",") if args.contenders else
                  [c for c in CONTENDERS if ctx.is_cuda or c != "compile-reduce-overhead"])
    bad = [c for c in contenders if c not in CONTENDERS]
    if bad or "eager" not in contenders:
        raise SystemExit(f"--contenders: unknown {bad}; eager (the numerics reference) is required")
    if "compile-reduce-overhead" in contenders and not ctx.is_cuda:
        raise SystemExit("--contenders: compile-reduce-overhead needs --device cuda (it is CUDA graphs)")
    sizes = [int(float(s)) for s in args.sizes.split(",")] if args.sizes else (
        list(TINY_SIZES) if ctx.tiny else list(SIZES))
    losses = [l for l in args.losses.split(",") if l]
    phases = [p for p in args.phases.split(",") if p]
    if any(l not in LOSSES for l in losses) or any(p not in PHASES for p in phases):
        raise SystemExit(f"--losses must be a subset of {LOSSES} and --phases of {PHASES}")
    rows, notes = run(ctx, sizes, losses, contenders, phases)
    tmd, tres = targets(ctx, rows)
    body = tmd + "\n\n" + tables_md(rows, contenders, ctx.is_cuda)
    body += "\n\n" + H.clocks_md(rows, ("loss", "n", "phase"), ctx.is_cuda, "device_median_s", "ganx",
                                 "Device time and wall time per call")
    body += H.dropped_md(notes)
    return H.finish(ctx, f"Adversarial losses benchmark: {ctx.env['device']}, {H.SHORT_DTYPE[ctx.dtype]}", body, rows,
             {"targets": tres, "dropped": notes}, plots(ctx, rows, contenders),
             compare_keys=H.COMPARE_KEYS[BENCH], echo=echo)


main = H.entry_point(run_main)
