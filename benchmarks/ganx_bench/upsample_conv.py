"""Benchmark of ``ganx.functional.upsample_conv2d`` (nearest x2 upsampling + 3x3 conv, fused).

Contenders, in one process, on the same inputs, dtype and flags:

- ``ganx``: ``ganx.functional.upsample_conv2d`` (phase-decomposed fused kernel, fused epilogue).
- ``eager``: ``nn.Sequential(nn.Upsample(2, "nearest"), nn.Conv2d(k, padding=k//2)[, act])``.
- ``compile``: ``torch.compile`` of that eager module (default mode).
- ``compile-max-autotune`` (CUDA only): ``mode="max-autotune-no-cudagraphs"``; CUDA graphs
  are left out so that every contender gets the same treatment: the harness's own graph-replay
  column.
- ``convT-folded``: ``F.conv_transpose2d(x, W4, b, stride=2, padding=1)`` with the 4x4 kernel
  folded from the 3x3 one (see ganx.ops.reference.deconv_weight): cuDNN's / oneDNN's best form of the same
  math. The forward uses W4 folded once beforehand (what an inference deployment would do);
  forward+backward folds inside the step (a training step must, the 3x3 weight changes) so
  that its gradient reaches the 3x3 weight like every other contender's.

Work is counted on the phase-decomposed operation count (16 MACs per 2x2 output block per
(C_in, C_out) pair for k=3, s=2), the same count for every contender, so TFLOP/s ratios are
speed ratios. Forward+backward counts 3x the forward (grad_x and grad_w cost a forward each).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ganx.ops.reference import deconv_weight
from ganx_bench import harness as H

BENCH = "upsample_conv"
PHASES = ("fwd", "fwd+bwd")
CONTENDERS = ("ganx", "eager", "compile", "compile-max-autotune", "convT-folded")


# --------------------------------------------------------------------------- shapes

@dataclass(frozen=True)
class ConvShape:
    """One upsample+conv layer: x is (n, c_in, h, w), the output (n, c_out, 2h, 2w)."""
    id: str
    source: str
    n: int
    c_in: int
    c_out: int
    h: int
    w: int
    activation: Optional[str] = None
    negative_slope: float = 0.01
    k: int = 3
    scale: int = 2
    dcgan_set: bool = False  # one of the 4 "DCGAN generator layers" of `ganx bench` (geomean reported)
    autotune: bool = False  # run compile-max-autotune here by default (it autotunes for minutes)
    skip: Tuple[str, ...] = ()  # contenders not run on this shape

    @property
    def label(self) -> str:
        return f"{self.id.rsplit('-n', 1)[0]} N{self.n} {self.c_in}->{self.c_out}ch {self.h}->{self.h * self.scale}px"


def _dcgan(n: int, set_blocks: Sequence[int] = ()) -> List[ConvShape]:
    # DCGAN 64x64 generator (Radford et al. 2015; the PyTorch DCGAN example, ngf=64) with each
    # ConvTranspose2d(4, 2, 1) replaced by resize-conv (Odena et al. 2016). Blocks 1-3 are
    # followed by BatchNorm, so their activation cannot be fused; block 4 ends in tanh.
    blocks = [(512, 256, 4, None), (256, 128, 8, None), (128, 64, 16, None), (64, 3, 32, "tanh")]
    out = []
    for i, (ci, co, hw, act) in enumerate(blocks, start=1):
        out.append(ConvShape(f"dcgan64-g{i}-n{n}", f"DCGAN-64 generator block {i} ({hw}->{2 * hw} px)",
                             n, ci, co, hw, hw, activation=act, dcgan_set=i in set_blocks))
    return out


# The 4th of the DCGAN generator layers: the last hidden block of a half-width DCGAN-128
# generator (ngf 32: 512->256->128->64->32 ch, then to RGB at 128 px), 32->64 px, batch 16.
DCGAN128_HALF_G4 = ConvShape("dcgan128-ngf32-g4-n16", "DCGAN-128 generator (ngf 32) block 4 (32->64 px)",
                             16, 64, 32, 32, 32, dcgan_set=True)


def _stylegan(n: int) -> List[ConvShape]:
    # StyleGAN2 config-f synthesis network (Karras et al. 2020): channels min(32768 / res, 512);
    # the up-conv of the 128 px block reads 64 px x 512 ch, the 256 px block 128 px x 256 ch;
    # followed by bias + leaky ReLU(0.2). (StyleGAN modulates the weight per sample; here the
    # plain 3x3 conv of the same size: "StyleGAN-like".)
    return [
        ConvShape(f"stylegan-128-n{n}", "StyleGAN2-like 128 px block up-conv (64->128 px, 512->256 ch)",
                  n, 512, 256, 64, 64, activation="leaky_relu", negative_slope=0.2),
        ConvShape(f"stylegan-256-n{n}", "StyleGAN2-like 256 px block up-conv (128->256 px, 256->128 ch)",
                  n, 256, 128, 128, 128, activation="leaky_relu", negative_slope=0.2),
    ]


def shapes_for(device: str, tiny: bool) -> List[ConvShape]:
    if tiny:
        return [
            ConvShape("tiny-a", "smoke test", 2, 8, 4, 4, 4, autotune=True),
            # (compiles only once per run: torch.compile dominates the smoke test's time)
            ConvShape("tiny-b", "smoke test (odd size, tanh epilogue)", 1, 4, 3, 5, 7, activation="tanh",
                      skip=("compile", "compile-max-autotune")),
        ]
    if device == "cuda":
        # max-autotune spends ~0.5-1 min per shape and phase tuning: by default it runs on a
        # launch-bound, a mid-size and the largest shape (--max-autotune all for every shape).
        g64, g256, sg = _dcgan(64, set_blocks=(1, 2, 3)), _dcgan(256), _stylegan(32)
        def mark(s: ConvShape) -> ConvShape:
            return dataclasses.replace(s, autotune=True)
        return [mark(g64[0])] + g64[1:] + [DCGAN128_HALF_G4] + g256[:2] + [mark(g256[2])] + g256[3:] + [sg[0], mark(sg[1])]
    # CPU (2-core target): the DCGAN generator layers, the DCGAN to-RGB layer, StyleGAN-like at batch 1.
    return _dcgan(64, set_blocks=(1, 2, 3))[:3] + [DCGAN128_HALF_G4] + [_dcgan(16)[3]] + _stylegan(1)


def quick_shapes() -> List[ConvShape]:
    """The "DCGAN generator layers" set: what ``ganx bench`` runs (``--shape-set dcgan``)."""
    return _dcgan(64, set_blocks=(1, 2, 3))[:3] + [DCGAN128_HALF_G4]


# --------------------------------------------------------------------------- work counts

def phase_taps(k: int, scale: int, padding: int) -> List[int]:
    """Taps per phase along one axis: how many distinct input offsets phase a reads."""
    return [(a + k - 1 - padding) // scale - (a - padding) // scale + 1 for a in range(scale)]


def flops(s: ConvShape, phase: str) -> float:
    """Phase-decomposed FLOPs (2 per MAC); forward+backward = 3x forward."""
    taps = phase_taps(s.k, s.scale, s.k // 2)
    macs = s.n * s.c_in * s.c_out * s.h * s.w * sum(ta * tb for ta in taps for tb in taps)
    return 2.0 * macs * (3 if phase == "fwd+bwd" else 1)


def compulsory_bytes(s: ConvShape, phase: str, elem: int) -> float:
    """Bytes that any implementation must move: inputs read and outputs written once."""
    x = s.n * s.c_in * s.h * s.w
    y = s.n * s.c_out * s.h * s.w * s.scale**2
    w = s.c_out * s.c_in * s.k * s.k
    fwd = x + w + y
    if phase == "fwd":
        return elem * fwd
    return elem * (fwd + y + x + w + x + w)  # + read grad_y, x, w; write grad_x, grad_w


# --------------------------------------------------------------------------- the contenders

def _activation_module(s: ConvShape) -> nn.Module:
    if s.activation is None:
        return nn.Identity()
    if s.activation == "relu":
        return nn.ReLU()
    if s.activation == "leaky_relu":
        return nn.LeakyReLU(s.negative_slope)
    if s.activation == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown activation {s.activation!r}")


def _act(y: torch.Tensor, s: ConvShape) -> torch.Tensor:
    from ganx.ops.reference import apply_activation
    return apply_activation(y, s.activation, s.negative_slope)


@dataclass
class Setup:
    shape: ConvShape
    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    grad_out: torch.Tensor
    forwards: Dict[str, Callable[[torch.Tensor], torch.Tensor]]  # contender -> (x -> y)


def build(s: ConvShape, ctx: H.Context, contenders: Sequence[str]) -> Setup:
    """Inputs and one forward callable per contender, all sharing the same x, weight and bias."""
    import ganx.functional as GF
    dev, dt = ctx.device, ctx.dtype
    conv = nn.Conv2d(s.c_in, s.c_out, s.k, padding=s.k // 2, device=dev, dtype=dt)
    eager = nn.Sequential(nn.Upsample(scale_factor=s.scale, mode="nearest"), conv, _activation_module(s))
    x = torch.randn(s.n, s.c_in, s.h, s.w, device=dev, dtype=dt)
    grad_out = torch.randn(s.n, s.c_out, s.h * s.scale, s.w * s.scale, device=dev, dtype=dt)
    w, b = conv.weight, conv.bias
    forwards: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}
    for name in contenders:
        if name == "ganx":
            forwards[name] = lambda x_: GF.upsample_conv2d(x_, w, b, s.scale, activation=s.activation,
                                                           negative_slope=s.negative_slope)
        elif name == "eager":
            forwards[name] = eager
        elif name == "compile":
            forwards[name] = torch.compile(eager, dynamic=False, backend=ctx.args.get("compile_backend") or "inductor")
        elif name == "compile-max-autotune":
            forwards[name] = torch.compile(eager, mode="max-autotune-no-cudagraphs", dynamic=False)
        elif name == "convT-folded":
            if s.k == 3 and s.scale == 2:  # the fold exists only for this case
                forwards[name] = lambda x_: _act(F.conv_transpose2d(x_, deconv_weight(w), b, stride=2, padding=1), s)
        else:
            raise ValueError(f"unknown contender {name!r}; choose from {CONTENDERS}")
    return Setup(s, x, w, b, grad_out, forwards)


def step_fn(st: Setup, name: str, phase: str) -> Callable[[], Any]:
    """The timed callable: forward under no_grad, or forward + backward via autograd.grad.

    Forward+backward returns (grad_x, grad_w, grad_b) through ``torch.autograd.grad``: no
    ``.grad`` accumulation to zero between runs, and the same three gradients from everyone.
    """
    if phase == "fwd":
        if name == "convT-folded":  # inference folds once, outside the timed call
            w4, b, s = deconv_weight(st.weight.detach()), st.bias.detach(), st.shape

            def fwd(x_):
                return _act(F.conv_transpose2d(x_, w4, b, stride=2, padding=1), s)
        else:
            fwd = st.forwards[name]

        def run_fwd():
            with torch.no_grad():
                return fwd(st.x)
        return run_fwd

    fwd = st.forwards[name]
    x = st.x.detach().requires_grad_(True)
    params = (x, st.weight, st.bias)

    def run_fwd_bwd():
        return torch.autograd.grad(fwd(x), params, st.grad_out)
    return run_fwd_bwd


# --------------------------------------------------------------------------- running

def _outputs(fn: Callable[[], Any]) -> Tuple[torch.Tensor, ...]:
    out = fn()
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def check_contenders(st: Setup, phase: str, names: Sequence[str], tol: float,
                     reference: str = "eager") -> Tuple[Dict[str, float], Dict[str, str], Dict[str, str]]:
    """Runs every contender once on the same inputs and compares it with ``reference``.

    Returns ({contender: max relative error}, {contender: why it was dropped},
    {contender: NumericsError message}). Only the first dict's contenders may be timed. A
    torch.compile contender that fails to *compile* is dropped with its reason (an environment
    problem); any contender that runs and disagrees is a numerics failure.
    """
    what = ("y",) if phase == "fwd" else ("grad_x", "grad_w", "grad_b")
    ref = _outputs(step_fn(st, reference, phase))
    errs, dropped, failed = {}, {}, {}
    for name in names:
        try:
            got = _outputs(step_fn(st, name, phase))
        except Exception as e:
            if not name.startswith("compile"):
                raise
            dropped[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            continue
        try:
            errs[name] = max(H.check_close(f"{st.shape.id} {phase} {name} vs {reference}: {w}", g, r, tol)
                             for w, g, r in zip(what, got, ref))
        except H.NumericsError as e:
            failed[name] = str(e)
    return errs, dropped, failed


def run(ctx: H.Context, shapes: Sequence[ConvShape], contenders: Sequence[str],
        phases: Sequence[str] = PHASES, all_autotune: bool = False, log=print) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
    """Checks then times every (shape, phase, contender); returns the result rows and drop notes."""
    rows: List[Dict[str, Any]] = []
    notes: Dict[str, str] = {}
    elem = torch.tensor([], dtype=ctx.dtype).element_size()
    tol = H.tolerance(ctx.dtype, ctx.tf32)
    peak = ctx.peaks["matmul_flops_per_s"]
    with H.run_rows(ctx):
        for s in shapes:
            wanted = [c for c in contenders if c not in s.skip
                      and (c != "compile-max-autotune" or s.autotune or all_autotune)]
            if any(c.startswith("compile") for c in wanted):
                H.reset_compile_caches()
            st = build(s, ctx, wanted)
            for phase in phases:
                names = [c for c in contenders if c in st.forwards]
                errs, dropped, failed = check_contenders(st, phase, names, tol)
                for name, msg in failed.items():
                    ctx.failures.append(msg)
                    log(f"  !! NUMERICS FAILURE, not timed: {msg}")
                for name, why in dropped.items():
                    notes[f"{s.id} {phase} {name}"] = why
                    log(f"  ! {s.id} {phase} {name} dropped: {why}")
                timed: Dict[str, H.Timing] = {}
                for name in names:
                    if name not in errs:
                        continue
                    fn = step_fn(st, name, phase)
                    t = H.time_fn(ctx, fn)
                    graph = H.time_cuda_graph(ctx, fn) if ctx.graphs else None
                    host = H.time_host(ctx, fn, t)
                    mem = H.peak_memory(ctx, fn)
                    timed[name] = t
                    fl, by = flops(s, phase), compulsory_bytes(s, phase, elem)
                    rows.append({
                        "shape": s.id, "label": s.label, "source": s.source, "n": s.n, "c_in": s.c_in,
                        "c_out": s.c_out, "h": s.h, "w": s.w, "k": s.k, "scale": s.scale,
                        "activation": s.activation, "dcgan_set": s.dcgan_set, "phase": phase, "contender": name,
                        "median_s": t.median, "p20_s": t.p20, "p80_s": t.p80, "runs": t.n, "method": t.method,
                        "graph_median_s": graph.median if isinstance(graph, H.Timing) else None,
                        "graph_note": graph if isinstance(graph, str) else None, **host,
                        "flops": fl, "tflops": fl / t.median / 1e12, "pct_peak": 100 * fl / t.median / peak,
                        "bytes": by, "arith_intensity": fl / by, "peak_mem_bytes": mem,
                        "max_rel_err_vs_eager": errs[name], "speedup_vs": {},  # filled once the row's contenders are timed
                    })
                    log(f"  {s.label:44s} {phase:7s} {name:22s} {H.fmt_time(t.median):>10s}")
                for r in rows:
                    if r["shape"] == s.id and r["phase"] == phase:
                        r["speedup_vs"] = {o: timed[o].median / r["median_s"] for o in timed}
            del st
    return rows, notes


def summary(rows: List[Dict[str, Any]], contenders: Sequence[str], cuda: bool = True) -> Tuple[str, Dict[str, Any]]:
    """The headline: ganx's speed-up over each contender per shape, and the geomeans over the
    DCGAN generator layers."""
    others = [c for c in contenders if c != "ganx" and any(r["contender"] == c for r in rows)]
    table, extra = [], {}
    for r in rows:
        if r["contender"] != "ganx":
            continue
        table.append([r["label"], r["phase"], H.fmt_time(r["median_s"]),
                      *(H.fmt_ratio(r["speedup_vs"].get(o)) for o in others), f"{r['tflops']:.3g}"])
    md = ["## ganx speed-up (time of contender / time of ganx; > 1 means ganx is faster)", "",
          H.md_table(["shape", "phase", "ganx time", *(f"vs {o}" for o in others), "ganx TFLOP/s"], table)]
    i2 = [r for r in rows if r["dcgan_set"] and r["contender"] == "ganx"]
    if i2:
        gm = {ph: H.geomean(r["speedup_vs"].get("eager") for r in i2 if r["phase"] == ph) for ph in PHASES}
        n_shapes = len({r["shape"] for r in i2})
        extra["dcgan_layers_geomean_speedup_vs_eager"] = gm
        md += ["", f"**DCGAN generator layers** ({n_shapes} of 4 shapes): geometric-mean speed-up of ganx "
               f"over eager: forward **{H.fmt_ratio(gm['fwd'])}**, forward+backward **{H.fmt_ratio(gm['fwd+bwd'])}**."]
    # Per batch size and phase, over the shapes of that batch: ganx's geomean speed-up over each
    # contender on every clock (device events, graph replay, wall, host).
    fields = [f for f, _ in H.clocks(cuda, "graph_median_s")]
    gms, gm_rows = {}, []
    for n in sorted({r["n"] for r in rows}):
        for ph in PHASES:
            sub = [r for r in rows if r["n"] == n and r["phase"] == ph]
            for o in others:
                g = H.clock_geomeans(sub, ("shape", "phase"), "ganx", o, fields)
                if any(v == v for v in g.values()):  # not all NaN
                    n_shapes = len({r["shape"] for r in sub if r["contender"] == "ganx"})
                    gms[f"n{n} {ph} vs {o}"] = {**g, "shapes": n_shapes}
                    gm_rows.append([f"N{n}", ph, o, n_shapes, *(H.fmt_ratio(g[f]) for f in fields)])
    if gm_rows:
        extra["geomean_speedup_by_batch"] = gms
        md += ["", "### ganx geometric-mean speed-up per batch size, on each clock", "",
               H.md_table(["batch", "phase", "vs", "shapes", *(t for _, t in H.clocks(cuda, "graph_median_s"))],
                          gm_rows)]
    return "\n".join(md), extra


def detail_md(rows: List[Dict[str, Any]], contenders: Sequence[str], cuda: bool) -> str:
    present = [c for c in contenders if any(r["contender"] == c for r in rows)]
    head = ["shape", "phase", "contender", "median", "p20", "p80", *(f"x{c}" for c in present),
            "TFLOP/s", "% peak", "peak mem"] + (["graph replay"] if cuda else [])
    body = []
    for r in rows:
        body.append([r["label"], r["phase"], r["contender"], H.fmt_time(r["median_s"]),
                     H.fmt_time(r["p20_s"]), H.fmt_time(r["p80_s"]),
                     *(H.fmt_ratio(r["speedup_vs"].get(c)) for c in present),
                     f"{r['tflops']:.3g}", f"{r['pct_peak']:.1f}", H.fmt_bytes(r["peak_mem_bytes"])]
                    + ([H.fmt_time(r["graph_median_s"]) if r["graph_median_s"] else (r["graph_note"] or "-")]
                       if cuda else []))
    sources = sorted({(r["label"], r["source"]) for r in rows})
    return "\n".join([
        "## All contenders", "",
        "`xC` = time of contender C / time of this row (> 1: this row is faster than C). TFLOP/s on the "
        "phase-decomposed count (fwd+bwd = 3x fwd), % of the measured matmul peak; peak memory "
        "allocated during one call above what was allocated before it.", "",
        H.md_table(head, body), "", "Shapes:", "",
        *(f"- `{label}`: {src}" for label, src in sources)])


def plots(ctx: H.Context, rows: List[Dict[str, Any]], contenders: Sequence[str]):
    labels = list(dict.fromkeys(r["label"] for r in rows))
    others = [c for c in contenders if c != "ganx" and any(r["contender"] == c for r in rows)]

    def speedups(base: Path):
        panels = {}
        for ph in PHASES:
            g = {r["label"]: r for r in rows if r["contender"] == "ganx" and r["phase"] == ph}
            if g:
                panels[ph] = {f"vs {o}": [g[l]["speedup_vs"].get(o) if l in g else None for l in labels]
                              for o in others}
        if not panels or not others:
            return None
        return H.plot_bars(base.with_name(base.name + "-speedup.png"), panels, labels,
                           f"ganx upsample_conv2d speed-up ({ctx.env['device']})", "speed-up (x)")

    def roofline(base: Path):
        pts = [{"ai": r["arith_intensity"], "flops": r["flops"] / r["median_s"],
                "group": f"{r['contender']} {r['phase']}"} for r in rows]
        return H.plot_roofline(base.with_name(base.name + "-roofline.png"), pts,
                               ctx.peaks["matmul_flops_per_s"], ctx.peaks["copy_bytes_per_s"],
                               f"upsample_conv2d roofline ({ctx.env['device']}, {H.SHORT_DTYPE[ctx.dtype]})")
    return [speedups, roofline]


def default_contenders(device: str) -> List[str]:
    return [c for c in CONTENDERS if device == "cuda" or c != "compile-max-autotune"]


def parser(default_out: Optional[Path] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark ganx.functional.upsample_conv2d (fused nearest-x2 upsample + 3x3 conv) "
                    "against eager Upsample+Conv2d, its torch.compile and the folded-weight conv_transpose2d, "
                    "forward and forward+backward, at real GAN layer shapes.")
    H.add_common_args(p, default_out=default_out, default_cache="flush")
    p.add_argument("--contenders", default=None,
                   help=f"comma-separated subset of {','.join(CONTENDERS)} (default: all; max-autotune on CUDA only)")
    p.add_argument("--shapes", default=None,
                   help="comma-separated substrings; only shapes whose id or label contains one run")
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of fwd,fwd+bwd")
    p.add_argument("--shape-set", choices=["default", "dcgan"], default="default",
                   help="'dcgan': only the 4 DCGAN generator layers (DCGAN-64 blocks 1-3 at batch 64, "
                        "a DCGAN-128 ngf-32 block at batch 16; what `ganx bench` runs)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the 'compile' contender (default inductor; 'aot_eager' traces "
                        "without code generation: the GPU check's CPU dry run)")
    p.add_argument("--max-autotune", choices=["marked", "all"], default="marked",
                   help="CUDA: run compile-max-autotune on the few marked shapes (default) or on all")
    return p


def run_main(argv: Optional[Sequence[str]] = None, default_out: Optional[Path] = None, echo: bool = True) -> str:
    """Parses ``argv``, checks, times, writes the results; returns the Markdown report."""
    args = parser(default_out).parse_args(argv)
    if (args.device or ("cuda" if torch.cuda.is_available() else "cpu")) == "cpu" and args.dtype not in ("float32", "float64"):
        raise SystemExit(f"bench_upsample_conv: ganx's CPU kernels take float32 or float64, not {args.dtype} "
                         "(half precision is benchmarked on CUDA)")
    ctx = H.setup(BENCH, args)
    contenders = args.contenders.split(",") if args.contenders else default_contenders(ctx.device.type)
    bad = [c for c in contenders if c not in CONTENDERS]
    if bad or "eager" not in contenders:
        raise SystemExit(f"--contenders: unknown {bad}; eager (the numerics reference) is required")
    phases = [p for p in args.phases.split(",") if p]
    if any(p not in PHASES for p in phases):
        raise SystemExit(f"--phases must be a subset of {PHASES}, got {args.phases!r}")
    shapes = quick_shapes() if args.shape_set == "dcgan" and not ctx.tiny else shapes_for(ctx.device.type, ctx.tiny)
    if args.shapes:
        keys = args.shapes.split(",")
        shapes = [s for s in shapes if any(k in s.id or k in s.label for k in keys)]
        if not shapes:
            raise SystemExit(f"--shapes {args.shapes!r} matches no shape")
    rows, notes = run(ctx, shapes, contenders, phases, all_autotune=args.max_autotune == "all")
    head, extra = summary(rows, contenders, ctx.is_cuda)
    body = head + "\n\n" + H.clocks_md(rows, ("label", "phase"), ctx.is_cuda, "graph_median_s", "ganx",
                                       "Device time and wall time per call")
    body += "\n\n" + detail_md(rows, contenders, ctx.is_cuda)
    body += H.dropped_md(notes)
    return H.finish(ctx, f"upsample_conv2d benchmark: {ctx.env['device']}, {H.SHORT_DTYPE[ctx.dtype]}", body, rows,
             {"summary": extra, "dropped": notes}, plots(ctx, rows, contenders),
             compare_keys=H.COMPARE_KEYS[BENCH], echo=echo)


main = H.entry_point(run_main)
