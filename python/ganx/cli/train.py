"""``ganx train``: its flags (every TrainConfig field, generated from the dataclass), the
config-file / resume / flag layering, and the run's report."""
from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Union, get_args, get_origin, get_type_hints

from ganx.cli.errors import UserError
from ganx.metrics import format_metrics
from ganx.train import ConfigError, Trainer, TrainConfig, distributed, load_config_file
from ganx.train.checkpoint import CheckpointError, CheckpointSaveError
from ganx.train.faults import NonFiniteLossError
from ganx.train.resume import auto_resume_path

__all__ = ["add_parser", "run"]


def _add_config_flags(p: argparse.ArgumentParser) -> None:
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


def add_parser(sub) -> argparse.ArgumentParser:
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
    return t


def run(args) -> int:
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
    quality = format_metrics(metrics)
    print(f"ganx: done: {metrics['steps']} steps in {metrics['train_seconds']:.1f} s"
          + (f"; {quality}" if quality else ""))
    print(f"ganx: outputs in {trainer.run_dir} (all metrics in metrics.json)")
    return 0


def _make_trainer(args) -> Trainer:
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
            if trainer.is_main and trainer.step < trainer.config.steps:  # else: run() says so
                print(f"ganx: resuming {trainer.run_dir} at step {trainer.step}")
        else:
            cfg = TrainConfig.from_dict({**file_cfg, **overrides})
            trainer = Trainer(cfg)
    except (ConfigError, FileNotFoundError, CheckpointError) as e:
        raise UserError(str(e)) from e
    return trainer
