"""The `ganx` command line: train, sample, info.

    ganx train [--config FILE.yaml|.toml] [--OPTION VALUE ...] [--resume RUN_OR_CHECKPOINT]
    ganx sample --checkpoint PATH [--n 64] [--class 3] [--out grid.png]
    ganx info

Options of `train` come from, in increasing priority: the defaults, the config file, the
flags. Every config key is a flag (``batch_size`` -> ``--batch-size``; booleans have a
``--no-`` form). Errors in user input are one-line messages and exit status 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import List, Optional, Union, get_args, get_origin, get_type_hints

__all__ = ["main", "build_parser"]


class UserError(Exception):
    """An error in what the user asked for: printed without a traceback."""


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    from ganx.train.config import TrainConfig

    hints = get_type_hints(TrainConfig)
    g = p.add_argument_group("training options (also valid as config-file keys, with underscores)")
    for f in dataclasses.fields(TrainConfig):
        typ = hints[f.name]
        optional = get_origin(typ) is Union
        base = next(a for a in get_args(typ) if a is not type(None)) if optional else typ
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata["help"] + f" (default: {f.default})"
        # default=SUPPRESS: only flags the user actually gave end up in the namespace, so they
        # can override the config file without the defaults clobbering it.
        if base is bool:
            g.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=help_)
        else:
            choices = f.metadata.get("choices")
            g.add_argument(flag, dest=f.name, type=base, default=argparse.SUPPRESS, metavar=base.__name__.upper(),
                           choices=[c for c in choices if c is not None] if choices else None, help=help_)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ganx", description="ganx: GAN training with fused C++/CUDA kernels.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a GAN (default: conditional GAN on the embedded digits)",
                       description="Train a GAN. With no options: a conditional GAN on sklearn's digits at "
                                   "16x16, on CUDA when available, else on the CPU; outputs go to a run folder "
                                   "(samples/, checkpoints/, log.jsonl, losses.png, metrics.json, config.yaml).")
    t.add_argument("--config", metavar="FILE", help="YAML (.yaml/.yml) or TOML (.toml) file of training options")
    t.add_argument("--resume", metavar="PATH", help="continue a run from its checkpoint (a .pt file or a run "
                   "folder); its config is used, with the options given here on top (e.g. --steps). "
                   "'auto': resume the run folder given by --out from its newest readable checkpoint "
                   "(skipping truncated or corrupted ones), or start it afresh if it has none")
    _add_config_flags(t)

    s = sub.add_parser("sample", help="draw an image grid from a checkpoint",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint file or run folder")
    s.add_argument("--n", type=int, default=64, help="number of images")
    s.add_argument("--class", dest="label", metavar="LABEL", default=None,
                   help="class to draw (index or class name); conditional models only. Without it a "
                        "conditional model cycles through the classes")
    s.add_argument("--out", default="grid.png", help="output PNG")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about sqrt(n))")
    s.add_argument("--seed", type=int, default=0, help="seed of the latents")
    s.add_argument("--no-ema", action="store_true", help="use G's raw weights instead of their EMA")
    s.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")

    sub.add_parser("info", help="print versions, build and devices")

    b = sub.add_parser("bench", help="quick CPU timer of the fused ops against eager PyTorch (about a minute)",
                       description="Times ganx's fused ops against eager PyTorch on the CPU: upsample_conv2d on "
                                   "four DCGAN generator layers (forward, forward+backward) and the BCE "
                                   "discriminator loss at 64 and 1M logits, each checked against eager first, "
                                   "and prints the Markdown table. The full benchmark suite (GPU, torch.compile, "
                                   "the folded conv_transpose2d, more shapes, plots) is in the repository's "
                                   "benchmarks/.")
    b.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's default)")
    b.add_argument("--out", default=None, help="also write the report as .md and .json into this folder")
    return p


def _cmd_train(args) -> int:
    from ganx.train import distributed
    from ganx.train.faults import NonFiniteLossError
    from ganx.train.checkpoint import CheckpointSaveError

    try:
        trainer = _make_trainer(args)
        print_ = print if trainer.is_main else (lambda *a, **k: None)
        if trainer.step >= trainer.config.steps:
            # A finished run (e.g. `--resume auto` relaunched by a job scheduler): nothing to do,
            # and nothing is written (no checkpoint rotation, no new samples or metrics).
            print_(f"ganx: the run is already at step {trainer.step}; pass --steps M (more than "
                   f"{trainer.step}) to train further. Nothing was written.")
            return 0
        print_(f"ganx: training on {trainer.device} into {trainer.run_dir} "
               f"({len(trainer.dataset)} images, {trainer.config.image_size}px, "
               f"{'conditional' if trainer.num_classes else 'unconditional'}, impl={trainer.config.impl}"
               + (f", {trainer.dist.world_size} processes ({trainer.dist.backend})" if trainer.dist.enabled else "")
               + ")")
        try:
            metrics = trainer.fit()
        except NonFiniteLossError as e:
            raise UserError(f"{e}; stopped. The last good checkpoint is kept: {trainer.checkpoint_path!r} "
                            f"({'present' if os.path.isfile(trainer.checkpoint_path) else 'none written yet'}). "
                            f"Lower the learning rates, or pass --skip-nonfinite to skip such steps") from e
        except CheckpointSaveError as e:
            raise UserError(str(e)) from e
    finally:
        distributed.cleanup()
    if metrics.get("interrupted"):
        print_(f"ganx: stopped by {metrics['interrupted']} after step {metrics['steps']}; checkpoint saved to "
               f"{metrics['checkpoint']}")
        print_(f"ganx: to continue: ganx train --resume {trainer.run_dir}")
        return 0
    if not trainer.is_main:
        return 0
    from ganx.metrics import format_metrics

    quality = format_metrics(metrics)
    print(f"ganx: done: {metrics['steps']} steps in {metrics['train_seconds']:.1f} s"
          + (f"; {quality}" if quality else ""))
    print(f"ganx: outputs in {trainer.run_dir} (all metrics in metrics.json)")
    return 0


def _make_trainer(args):
    from ganx.train import ConfigError, Trainer, TrainConfig, load_config_file
    from ganx.train.checkpoint import CheckpointError
    from ganx.train.resume import auto_resume_path

    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume")}
    try:
        file_cfg = load_config_file(args.config) if args.config else {}
        if args.resume == "auto":
            TrainConfig.from_dict(file_cfg)
            out = overrides.get("out", file_cfg.get("out"))
            if not out:
                raise UserError("--resume auto needs the run folder: give --out RUN (or 'out' in the config file)")
            path = auto_resume_path(out)  # the policy: ganx.train.resume
            if path is None:
                if os.environ.get("RANK", "0") == "0":  # one line under torchrun
                    print(f"ganx: --resume auto: no checkpoint in {out!r}; starting a fresh run there")
                args.resume = None  # nothing to resume: a fresh run in that folder
            else:
                args.resume = path
        if args.resume:
            # Only the keys actually written in the file (validated) and the flags given override
            # the checkpoint's config; the defaults must not (they would reset e.g. the run folder).
            TrainConfig.from_dict(file_cfg)
            file_keys = {str(k).replace("-", "_"): v for k, v in file_cfg.items()}
            trainer = Trainer.from_checkpoint(args.resume, {**file_keys, **overrides})
            if trainer.is_main and trainer.step < trainer.config.steps:  # else: _cmd_train says so
                print(f"ganx: resuming {trainer.run_dir} at step {trainer.step}")
        else:
            cfg = TrainConfig.from_dict({**file_cfg, **overrides})
            trainer = Trainer(cfg)
    except (ConfigError, FileNotFoundError, CheckpointError) as e:
        raise UserError(str(e)) from e
    return trainer


def _cmd_sample(args) -> int:
    import math

    import torch

    from ganx.models.common import latents
    from ganx.train import load_generator, resolve_device
    from ganx.train.config import ConfigError
    from ganx.train.images import save_grid

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    try:
        device = resolve_device(args.device)
        G, ckpt = load_generator(args.checkpoint, use_ema=not args.no_ema, device=device)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e
    names = list(ckpt.get("class_names") or [])
    labels = None
    if G.num_classes is not None:
        if args.label is None:
            labels = torch.arange(args.n) % G.num_classes
        else:
            if args.label in names:
                c = names.index(args.label)
            elif args.label.lstrip("-").isdigit():
                c = int(args.label)
            else:
                raise UserError(f"--class {args.label!r}: not a class index or name (classes: {names})")
            if not 0 <= c < G.num_classes:
                raise UserError(f"--class {c}: out of range, the model has {G.num_classes} classes (0..{G.num_classes - 1})")
            labels = torch.full((args.n,), c, dtype=torch.int64)
    elif args.label is not None:
        raise UserError("--class: this checkpoint's generator is unconditional")
    g = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        z = latents(args.n, G.latent_dim, g, device)
        imgs = G(z, labels.to(device) if labels is not None else None)
    nrow = args.nrow or (G.num_classes if (labels is not None and args.label is None and args.n >= G.num_classes * 2)
                         else max(1, math.ceil(math.sqrt(args.n))))
    save_grid(imgs, args.out, nrow)
    print(f"ganx: wrote {args.n} samples to {args.out}")
    return 0


def _cmd_info(args) -> int:
    import platform

    import torch

    import ganx
    from ganx import _ext

    print(f"ganx {ganx.__version__} ({os.path.dirname(ganx.__file__)})")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(f"torch running: {torch.__version__}; ganx built against torch {_ext.BUILT_TORCH_VERSION}")
    print(f"CUDA kernels built: {'yes' if _ext.CUDA_BUILT else 'no'}"
          + (f", for {_ext.cuda_arch_summary()}" if _ext.CUDA_BUILT else ""))
    print(f"torch CUDA: {torch.version.cuda or 'none (CPU build)'}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"device cuda:{i}: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB")
    else:
        print("visible CUDA devices: none")
    print(f"CPU threads: {torch.get_num_threads()}; CPU loss kernels: {_ext._C.cpu_isa()} "
          f"(torch's CPU capability: {torch.backends.cpu.get_cpu_capability()})")
    from ganx.ops import upsample_conv as _uc
    forced = _uc.get_upconv_algorithm()
    print(f"upsample-conv algorithms: {', '.join(_uc.UPCONV_ALGORITHMS)}; "
          + (f"forced: {forced} (GANX_UPCONV_ALGO / ganx.ops.set_upconv_algorithm)" if forced else
             "automatic (static rule; timed once per shape when torch.backends.cudnn.benchmark is on); "
             "choices made so far: ganx.ops.upconv_algorithm_choices()"))
    try:
        import torch.utils.tensorboard  # noqa: F401
        tb = "yes"
    except Exception:
        tb = 'no (logs go to log.jsonl only; pip install "ganx[tensorboard]" for TensorBoard)'
    print(f"tensorboard: {tb}")
    return 0


def _cmd_bench(args) -> int:
    from ganx.bench import run_quick

    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads must be >= 1, got {args.threads}")
    print(run_quick(args.out, threads=args.threads))
    return 0


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _reject_unknown(sub: argparse.ArgumentParser, extra: List[str]) -> None:
    """An unknown flag of a command: that command's usage and error (argparse would print the
    top-level `ganx` usage), with the closest valid flag when there is one."""
    import difflib

    flags = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for arg in extra:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], flags, n=1, cutoff=0.75)
            if close:
                hints.append(f"{arg.split('=', 1)[0]}: did you mean {close[0]}?")
    sub.error(f"unrecognized arguments: {' '.join(extra)}" + ("".join(f"; {h}" for h in hints)))


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _reject_unknown(_subparser(parser, args.command), extra)
    from ganx.data import DataError
    from ganx.train.checkpoint import CheckpointError
    from ganx.train.config import ConfigError

    try:
        return {"train": _cmd_train, "sample": _cmd_sample, "info": _cmd_info,
                "bench": _cmd_bench}[args.command](args)
    except (UserError, DataError, ConfigError, CheckpointError) as e:
        print(f"ganx {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
