"""``ganx train``: its flags (every TrainConfig field, generated from the dataclass), the
config-file / resume / flag layering, and the run's report."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
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
        default = f.metadata.get("default_text") or (repr(f.default) if f.default == "" else f.default)
        help_ = f.metadata["help"] + f" (default: {default})"
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
    trainer = None
    try:
        trainer = _make_trainer(args)
        print_ = print if trainer.is_main else (lambda *a, **k: None)
        if trainer.step >= trainer.config.steps:
            # A finished run (e.g. `--resume auto` relaunched by a job scheduler): nothing to
            # train. When it has all its outputs nothing is written (no checkpoint rotation, no
            # new samples or metrics); when a kill or a stop left it without its final grid or
            # metrics, those are completed (fit() does not train then).
            missing = trainer.missing_outputs()
            if not missing:
                print_(f"ganx: the run is already at step {trainer.step}; pass --steps M (more than "
                       f"{trainer.step}) to train further. Nothing was written.")
                return 0
            trainer.acquire_run_folder()  # a folder in use is refused before anything is said or done
            print_(f"ganx: the run is at its last step {trainer.step} but lacks {', '.join(missing)}; "
                   f"completing them (no training)")
        else:
            trainer.acquire_run_folder()
            if trainer.step > 0:
                print_(f"ganx: resuming {trainer.run_dir} at step {trainer.step}")
            print_(f"ganx: training on {trainer.device} into {trainer.run_dir} "
                   f"({len(trainer.dataset)} images, {trainer.config.image_size}px, "
                   f"{_conditioning(trainer)}, "
                   f"{trainer.config.generator}/{trainer.config.discriminator}, loss {trainer.config.loss}"
                   + (f", augment {trainer.config.augment}" if trainer.config.augment else "")
                   + f", impl={trainer.config.impl}"
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
        except KeyboardInterrupt:  # a second Ctrl-C: abort without saving, and say what is lost
            saved = (f"nothing saved since step {trainer.saved_step} ({trainer.checkpoint_path})"
                     if trainer.saved_step is not None else "no checkpoint was saved")
            print(f"ganx: aborted at step {trainer.step}; {saved}", file=sys.stderr)
            return 130
    finally:
        if trainer is not None:
            trainer.close()  # the process's torch switches as before (the in-process API, tests)
        distributed.cleanup()
    if metrics.get("interrupted") and metrics.get("during") == "metrics":
        print_(f"ganx: stopped by {metrics['interrupted']} during the end-of-run metrics; the run is trained to step "
               f"{metrics['steps']} and saved to {metrics['checkpoint']} (metrics.json not written)")
        print_(f"ganx: to compute the metrics: ganx train --resume {trainer.run_dir}")
        return 0
    if metrics.get("interrupted"):
        print_(f"ganx: stopped by {metrics['interrupted']} after step {metrics['steps']}; checkpoint saved to "
               f"{metrics['checkpoint']}")
        print_(f"ganx: to continue: ganx train --resume {trainer.run_dir}")
        return 0
    if not trainer.is_main:
        return 0
    quality = format_metrics(metrics)
    session = metrics["steps"] - trainer.start_step
    resumed = (f" (this session: {session} steps from step {trainer.start_step})" if trainer.start_step else "")
    print(f"ganx: done: step {metrics['steps']}, {metrics['train_seconds']:.1f} s of training in all{resumed}"
          + (f"; {quality}" if quality else ""))
    print(f"ganx: outputs in {trainer.run_dir} (all metrics in metrics.json)")
    return 0


def _conditioning(trainer: Trainer) -> str:
    if trainer.embedding_dim is not None:
        return f"conditional on {trainer.embedding_dim}-value embeddings"
    return "conditional" if trainer.num_classes else "unconditional"


def _make_trainer(args) -> Trainer:
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config", "resume")}
    try:
        file_cfg = load_config_file(args.config) if args.config else {}
        if args.resume:
            # A resume uses only the keys written in the file (on the checkpoint's config): the file
            # must be a valid config on its own. Checked once, here (a fresh run checks it with the flags).
            TrainConfig.from_dict(file_cfg)
        fresh_in_auto = False
        if args.resume == "auto":
            out = overrides.get("out", file_cfg.get("out"))
            if not out:
                raise UserError("--resume auto needs the run folder: give --out RUN (or 'out' in the config file)")
            path = auto_resume_path(out)  # the policy: ganx.train.resume
            if path is None:
                if os.environ.get("RANK", "0") == "0":  # one line under torchrun
                    print(f"ganx: --resume auto: no checkpoint in {out!r}; starting a fresh run there")
                args.resume = None  # nothing to resume: a fresh run in that folder
                fresh_in_auto = True
            else:
                args.resume = path
        if args.resume:
            # Only the keys actually written in the file (validated above) and the flags given override
            # the checkpoint's config; the defaults must not (they would reset e.g. the run folder).
            file_keys = {str(k).replace("-", "_"): v for k, v in file_cfg.items()}
            try:
                trainer = Trainer.from_checkpoint(args.resume, {**file_keys, **overrides})
            except CheckpointError as e:
                raise CheckpointError(f"{e}{_fallback_hint(args.resume)}") from None
        else:
            cfg = TrainConfig.from_dict({**file_cfg, **overrides})
            if cfg.out is not None and not fresh_in_auto:
                _refuse_existing_run(cfg.out)
            trainer = Trainer(cfg)
    except (ConfigError, FileNotFoundError, CheckpointError) as e:
        raise UserError(str(e)) from e
    return trainer


RUN_MARKERS = ("config.yaml", "log.jsonl", "metrics.json", os.path.join("checkpoints", "last.pt"),
               os.path.join("checkpoints", "previous.pt"))


def _refuse_existing_run(out: str) -> None:
    """A fresh run into a folder that already holds one would rewrite it (config.yaml, the log,
    metrics.json, the checkpoints): refused, naming the two ways on."""
    found = [m for m in RUN_MARKERS if os.path.lexists(os.path.join(out, m))]
    if found:
        raise UserError(f"--out {out!r} already holds a run ({', '.join(found)}); continue it with --resume auto "
                        f"(or --resume {out}), or give a new --out")


def _fallback_hint(resume: str) -> str:
    """For a --resume of a run's newest checkpoint that cannot be used: where its fallback is."""
    run = resume if os.path.isdir(resume) else None
    if run is None and os.path.basename(resume) == "last.pt":
        run = os.path.dirname(os.path.dirname(os.path.abspath(resume)))
    if run is None:
        return ""
    prev = os.path.join(run, "checkpoints", "previous.pt")
    if not os.path.isfile(prev):
        return ""
    return (f"; the run's fallback is {prev!r}: --resume auto --out {run} picks the newest usable checkpoint, "
            f"or --resume {prev}")
