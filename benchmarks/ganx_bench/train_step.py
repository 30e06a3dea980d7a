"""Benchmark of one full GAN training step (a D update, then a G update), in images/s.

The step is the one of :class:`ganx.train.Trainer` (``d_step`` then ``g_step``) without the
data loader, the EMA and the logging: D sees the real and the (no-grad) generated batch in one
pass and steps Adam; then G generates a fresh batch, goes through the frozen D and steps Adam.
Models: DCGAN-sized :class:`ganx.models.Generator` / :class:`ganx.models.Discriminator`
(latent 100, width 64, RGB) at 32x32 and 64x64 pixels, with the BCE loss; and the ResNet pair
(:class:`ganx.models.ResNetGenerator` / :class:`ganx.models.ResNetDiscriminator`, SNGAN-style,
spectral norm; latent 128, width 32, RGB; rows labelled "resnet") at 32x32 with the hinge loss,
the loss ``ganx train`` picks for it.

Contenders (same initial weights, same real batch and latents, same flags):

- ``fused``: models with ``impl="fused"`` and the loss with ``impl="fused"`` (ganx kernels).
- ``reference``: ``impl="reference"`` models and losses (plain PyTorch, eager).
- ``compile``: the reference models wrapped in ``torch.compile`` (default mode); the loss
  and the optimisers stay eager.

Precision: ``fp32``, or ``bf16`` = ``torch.autocast("cuda", torch.bfloat16)`` around the
forward passes (parameters and optimiser in fp32), as the Trainer's ``amp="bf16"``.
Before timing, every contender runs one step from the same state and its losses and
gradients are compared with those of the fp32 reference (in bf16: at most 2x the error of
the reference contender in bf16, the project's low-precision rule).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ganx_bench import harness as H

BENCH = "train_step"
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
CONTENDERS = ("fused", "reference", "compile")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class StepConfig:
    image_size: int
    batch: int
    precision: str
    width: int = 64
    latent_dim: int = 100
    channels: int = 3
    arch: str = "dcgan"  # both models' name in ganx.models.registry

    @property
    def id(self) -> str:
        return (("" if self.arch == "dcgan" else f"{self.arch}-") + f"{self.image_size}px-n{self.batch}-{self.precision}"
                + ("" if self.width == 64 else f"-w{self.width}"))

    @property
    def label(self) -> str:
        return (("" if self.arch == "dcgan" else f"{self.arch} ") + f"{self.image_size}px N{self.batch} {self.precision}"
                + ("" if self.width == 64 else f" width {self.width}"))

    @property
    def loss(self) -> str:
        """The loss ``ganx train`` uses with these models by default (ganx.train.TrainConfig)."""
        return "hinge" if self.arch == "resnet" else "bce"


def resnet(image_size: int, batch: int, precision: str) -> StepConfig:
    return StepConfig(image_size, batch, precision, width=32, latent_dim=128, arch="resnet")


def configs_for(device: str, tiny: bool, precisions: Sequence[str]) -> List[StepConfig]:
    if tiny:
        return [StepConfig(16, 4, p, width=4, latent_dim=8, arch=a) for p in precisions for a in ("dcgan", "resnet")]
    if device == "cuda":
        sizes = [(32, 64), (32, 256), (64, 64), (64, 256)]
        out = [StepConfig(px, n, "fp32") for px, n in sizes] if "fp32" in precisions else []
        out += [resnet(32, n, "fp32") for n in (64, 256)] if "fp32" in precisions else []
        # bf16 at the large batches, where mixed precision is used in practice.
        out += [StepConfig(px, n, p) for p in precisions if p != "fp32" for px, n in sizes if n == 256]
        out += [resnet(32, 256, p) for p in precisions if p != "fp32"]
        return out
    return [StepConfig(px, 64, p) for p in precisions for px in (32, 64)] + [resnet(32, 64, p) for p in precisions]


def build_models(cfg: StepConfig, impl: str):
    """The generator and discriminator of ``cfg`` (random weights), unconditional."""
    from ganx.models import DISCRIMINATORS, GENERATORS
    G = GENERATORS[cfg.arch](cfg.latent_dim, cfg.image_size, cfg.channels, cfg.width, impl=impl)
    D_cls = DISCRIMINATORS[cfg.arch]
    # a discriminator with fused layers (resnet: conv3x3 -> avgpool2 as one conv) takes the impl too
    extra = {"impl": impl} if "impl" in inspect.signature(D_cls).parameters else {}
    D = D_cls(cfg.image_size, cfg.channels, cfg.width, **extra)
    return G, D


def build_loss(cfg: StepConfig, impl: str):
    """The training loss of ``cfg`` as the Trainer builds it (``impl`` for the losses that have one)."""
    from types import SimpleNamespace

    from ganx.train.losses import LOSSES
    return LOSSES[cfg.loss].from_config(SimpleNamespace(impl=impl, g_loss="non_saturating", real_target=1.0))


# --------------------------------------------------------------------------- the step

class Step:
    """Models, optimisers and fixed inputs of one contender; ``__call__`` runs one D+G step."""

    def __init__(self, cfg: StepConfig, contender: str, state: Tuple[dict, dict], inputs: Dict[str, torch.Tensor],
                 device: torch.device, dtype: torch.dtype = torch.float32,
                 memory_format: torch.memory_format = torch.contiguous_format):
        impl = "fused" if contender == "fused" else "reference"
        G, D = build_models(cfg, impl)
        # the layout of weights and images (the Trainer's --memory-format), the same for every contender
        self.G = G.to(device, dtype, memory_format=memory_format)
        self.D = D.to(device, dtype, memory_format=memory_format)
        inputs = {k: v.to(dtype) for k, v in inputs.items()}
        inputs["real"] = inputs["real"].contiguous(memory_format=memory_format)
        self.G.load_state_dict(state[0])
        self.D.load_state_dict(state[1])
        self.G.train()
        self.D.train()
        self.g_fwd = torch.compile(self.G, dynamic=False) if contender == "compile" else self.G
        self.d_fwd = torch.compile(self.D, dynamic=False) if contender == "compile" else self.D
        self.loss = build_loss(cfg, impl)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.real, self.z, self.z2 = inputs["real"], inputs["z"], inputs["z2"]
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.precision == "bf16"
                         else contextlib.nullcontext())

    def __call__(self) -> Dict[str, torch.Tensor]:
        return self.run()

    def run(self, keep_grads: bool = False) -> Dict[str, torch.Tensor]:
        """One D update then one G update; ``keep_grads`` also returns both models' gradients."""
        n = self.real.shape[0]
        with torch.no_grad(), self.autocast:
            fake = self.g_fwd(self.z)
        with self.autocast:
            logits = self.d_fwd(torch.cat([self.real, fake.to(self.real.dtype)]))
            d_loss, stats = self.loss.d_loss(logits[:n], logits[n:])
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        d_grads = [p.grad.detach().clone() for p in self.D.parameters()] if keep_grads else None
        self.opt_d.step()
        self.D.requires_grad_(False)
        try:
            with self.autocast:
                g_loss = self.loss.g_loss(self.d_fwd(self.g_fwd(self.z2)))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
        finally:
            self.D.requires_grad_(True)
        out = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **stats}
        if keep_grads:
            out["d_grads"] = torch.cat([g.flatten().float() for g in d_grads])
            out["g_grads"] = torch.cat([p.grad.detach().flatten().float() for p in self.G.parameters()])
        return out


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def check(cfg: StepConfig, steps: Dict[str, Step], oracle: Dict[str, torch.Tensor],
          bf16_ref: Optional[Dict[str, torch.Tensor]], tf32: bool) -> Tuple[Dict[str, float], Dict[str, str]]:
    """Compares each contender's first step with the fp32 reference step.

    Returns ({contender: worst relative error}, {contender: NumericsError message}).

    fp32 configurations are checked in float64 (``steps`` and ``oracle`` are float64 steps):
    relative L2 error of the D and G gradient vectors and of the losses at most 1e-6. (In fp32
    the check is ill-conditioned: Adam's first D update divides each gradient entry by its own
    magnitude, so rounding-level differences of near-zero D gradients become lr-sized weight
    differences, and the G gradient through the updated D differs by ~1e-2 between two correct
    fp32 implementations -- eager and torch.compile of the same model included.)
    bf16: at most 2x that of the reference contender's bf16 step, plus 1e-3.
    """
    keys = ("d_loss", "g_loss", "d_grads", "g_grads")

    def errs(out):
        return {k: _rel_l2(out[k], oracle[k]) for k in keys}

    base = errs(bf16_ref) if bf16_ref is not None else None
    worst, failed = {}, {}
    for name, step in steps.items():
        e = errs(step.run(keep_grads=True))
        for k in keys:
            tol = (2 * base[k] + 1e-3) if base is not None else 1e-6
            if not math.isfinite(e[k]) or e[k] > tol:
                failed[name] = (
                    f"train step {cfg.label} {name}: {k} relative L2 error {e[k]:.3e} against the "
                    + ("fp32 reference step " if base is not None else "reference step (both in float64) ")
                    + f"exceeds {tol:.1e}" + (f" (reference contender in bf16: {base[k]:.3e})" if base else "")
                    + ": refusing to time a step that computes something else")
                break
        else:
            worst[name] = max(e.values())
    return worst, failed


# --------------------------------------------------------------------------- running

def run(ctx: H.Context, configs: Sequence[StepConfig], contenders: Sequence[str], log=print):
    rows: List[Dict[str, Any]] = []
    notes: Dict[str, str] = {}
    with H.run_rows(ctx):
        for i, cfg in enumerate(configs):
            names = [c for c in contenders if not (ctx.tiny and i > 0 and c == "compile")]
            if "compile" in names:
                H.reset_compile_caches()
            torch.manual_seed(ctx.args.get("seed", 0) + i)
            G0, D0 = build_models(cfg, "reference")
            state = (G0.state_dict(), D0.state_dict())
            inputs = {"real": torch.rand(cfg.batch, cfg.channels, cfg.image_size, cfg.image_size) * 2 - 1,
                      "z": torch.randn(cfg.batch, cfg.latent_dim), "z2": torch.randn(cfg.batch, cfg.latent_dim)}
            inputs = {k: v.to(ctx.device) for k, v in inputs.items()}

            def fresh(name: str, precision: str, dtype: torch.dtype = torch.float32) -> Step:
                return Step(dataclasses.replace(cfg, precision=precision), name, state, inputs, ctx.device, dtype,
                            MEMORY_FORMATS[ctx.args.get("memory_format", "contiguous")])

            # fp32 configurations: numerics checked in float64 (see check()); bf16 against fp32.
            check_dtype = torch.float64 if cfg.precision == "fp32" else torch.float32
            oracle = fresh("reference", "fp32", check_dtype).run(keep_grads=True)
            bf16_ref = fresh("reference", cfg.precision).run(keep_grads=True) if cfg.precision != "fp32" else None
            steps: Dict[str, Step] = {}
            for name in names:
                try:
                    steps[name] = fresh(name, cfg.precision)
                    if name == "compile":
                        steps[name]()  # compile now, so a failure to compile is reported, not a wrong answer
                        steps[name] = fresh(name, cfg.precision)
                except Exception as e:
                    if name != "compile":
                        raise
                    notes[f"{cfg.id} {name}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
            check_steps = ({name: fresh(name, cfg.precision, torch.float64) for name in steps}
                           if check_dtype == torch.float64 else steps)
            errs, failed = check(cfg, check_steps, oracle, bf16_ref, ctx.tf32)
            del check_steps
            for name, msg in failed.items():
                ctx.failures.append(msg)
                log(f"  !! NUMERICS FAILURE, not timed: {msg}")
            timed: Dict[str, H.Timing] = {}
            for name, step in steps.items():
                if name not in errs:
                    continue
                t = H.time_fn(ctx, step)
                host = H.time_host(ctx, step, t)
                mem = H.peak_memory(ctx, step)
                timed[name] = t
                rows.append({
                    "config": cfg.id, "label": cfg.label, "arch": cfg.arch, "loss": cfg.loss,
                    "image_size": cfg.image_size, "batch": cfg.batch,
                    "precision": cfg.precision, "width": cfg.width, "latent_dim": cfg.latent_dim,
                    "contender": name, "median_s": t.median, "p20_s": t.p20, "p80_s": t.p80, "runs": t.n,
                    "method": t.method, **host, "images_per_s": cfg.batch / t.median, "peak_mem_bytes": mem,
                    "max_rel_err_vs_fp32_reference": errs[name], "speedup_vs": {},  # filled once the row's contenders are timed
                })
                log(f"  {cfg.label:28s} {name:10s} {H.fmt_time(t.median):>10s}  {cfg.batch / t.median:10.1f} img/s")
            for r in rows:
                if r["config"] == cfg.id:
                    r["speedup_vs"] = {o: timed[o].median / r["median_s"] for o in timed}
            del steps
    return rows, notes


def tables_md(rows: List[Dict[str, Any]], contenders: Sequence[str]) -> str:
    present = [c for c in contenders if any(r["contender"] == c for r in rows)]
    others = [c for c in present if c != "fused"]
    summ = [[r["label"], f"{r['images_per_s']:.1f}", *(H.fmt_ratio(r["speedup_vs"].get(o)) for o in others)]
            for r in rows if r["contender"] == "fused"]
    body = [[r["label"], r["contender"], H.fmt_time(r["median_s"]), H.fmt_time(r["p20_s"]), H.fmt_time(r["p80_s"]),
             f"{r['images_per_s']:.1f}", *(H.fmt_ratio(r["speedup_vs"].get(c)) for c in present),
             H.fmt_bytes(r["peak_mem_bytes"])] for r in rows]
    return "\n".join([
        "## ganx fused training step: images/s and speed-up (time of contender / time of fused)", "",
        H.md_table(["config", "fused images/s", *(f"vs {o}" for o in others)], summ), "",
        "## All contenders", "",
        "One step = one D update (real + generated batch in one pass) + one G update; images/s = batch / step time.", "",
        H.md_table(["config", "contender", "step median", "p20", "p80", "images/s", *(f"x{c}" for c in present),
                    "peak mem"], body)])


def plots(ctx: H.Context, rows: List[Dict[str, Any]], contenders: Sequence[str]):
    def bars(base: Path):
        labels = list(dict.fromkeys(r["label"] for r in rows))
        if not labels:
            return None
        present = [c for c in contenders if any(r["contender"] == c for r in rows)]
        by = {(r["label"], r["contender"]): r["images_per_s"] for r in rows}
        series = {c: [by.get((l, c)) for l in labels] for c in present}
        return H.plot_bars(base.with_name(base.name + "-images.png"), {"images/s": series}, labels,
                           f"GAN training step ({ctx.env['device']})", "images / s", hline=None, log=False)
    return [bars]


def parser(default_out: Optional[Path] = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark a full GAN training step (D update + G update, images/s) of the DCGAN pair and the "
                    "ResNet pair (configs 'resnet-...'): ganx fused models and losses vs the reference PyTorch ones "
                    "vs torch.compile of the reference models.")
    H.add_common_args(p, default_out=default_out, default_cache="warm")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help=f"comma-separated subset of {','.join(CONTENDERS)}")
    p.add_argument("--precisions", default=None,
                   help="comma-separated subset of fp32,bf16 (bf16 = autocast; default: fp32 on CPU, fp32,bf16 on "
                        "CUDA; --dtype bfloat16 means bf16 only)")
    p.add_argument("--configs", default=None, help="comma-separated substrings of config ids, e.g. 32px-n64")
    p.add_argument("--memory-format", choices=tuple(MEMORY_FORMATS), default="contiguous",
                   help="layout of every contender's weights and images (the Trainer's --memory-format; 'auto' "
                        "there is channels_last from 32 px)")
    return p


def run_main(argv: Optional[Sequence[str]] = None, default_out: Optional[Path] = None, echo: bool = True) -> str:
    """Parses ``argv``, checks, times, writes the results; returns the Markdown report."""
    args = parser(default_out).parse_args(argv)
    if args.dtype not in ("float32", "bfloat16"):
        raise SystemExit("bench_train_step: --dtype must be float32 or bfloat16 (bf16 autocast; parameters stay fp32)")
    # Parameters stay fp32 whatever the autocast dtype: the measured peaks are taken in float32.
    precisions = ["bf16"] if args.dtype == "bfloat16" else None
    args_dtype, args.dtype = args.dtype, "float32"
    args.no_graphs = True  # optimiser steps and BatchNorm statistics: no graph-replay column here
    ctx = H.setup(BENCH, args)
    ctx.args["dtype"] = args_dtype
    if precisions is None:
        precisions = args.precisions.split(",") if args.precisions else (["fp32", "bf16"] if ctx.is_cuda else ["fp32"])
    if any(p not in PRECISIONS for p in precisions):
        raise SystemExit(f"--precisions must be a subset of {PRECISIONS}")
    if "bf16" in precisions and not ctx.is_cuda:
        raise SystemExit("bench_train_step: bf16 autocast is benchmarked on CUDA only (the Trainer's amp needs CUDA)")
    contenders = [c for c in args.contenders.split(",") if c]
    if any(c not in CONTENDERS for c in contenders) or "reference" not in contenders:
        raise SystemExit(f"--contenders must be a subset of {CONTENDERS} that includes reference")
    if args.min_runs is None and not ctx.is_cuda and not ctx.tiny:
        ctx.min_runs = 3  # a CPU step takes seconds
    configs = configs_for(ctx.device.type, ctx.tiny, precisions)
    if args.configs:
        keys = args.configs.split(",")
        configs = [c for c in configs if any(k in c.id for k in keys)]
        if not configs:
            raise SystemExit(f"--configs {args.configs!r} matches no config")
    rows, notes = run(ctx, configs, contenders)
    body = tables_md(rows, contenders)
    body += "\n\n" + H.clocks_md(rows, ("label",), ctx.is_cuda, None, "fused", "Device time and wall time per step")
    body += H.dropped_md(notes)
    return H.finish(ctx, f"GAN training step benchmark: {ctx.env['device']}", body, rows, {"dropped": notes},
             plots(ctx, rows, contenders), compare_keys=H.COMPARE_KEYS[BENCH], echo=echo)


main = H.entry_point(run_main)
