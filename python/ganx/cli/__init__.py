"""The `ganx` command line: train, sample, info, bench. One module per command (``ganx/cli/train.py``
...: its flags in ``add_parser``, its work in ``run``); this file is the scaffold: the parser, the
unknown-flag message, and the error handling every command shares.

    ganx train [--config FILE.yaml|.toml] [--OPTION VALUE ...] [--resume RUN_OR_CHECKPOINT]
    ganx sample --checkpoint PATH [--n 64] [--class 3] [--out grid.png]
    ganx info
    ganx bench [--threads N] [--out DIR]

Options of `train` come from, in increasing priority: the defaults, the config file, the
flags. Every config key is a flag (``batch_size`` -> ``--batch-size``; booleans have a
``--no-`` form). Errors in user input are one-line messages and exit status 2.

Imports are at the top, none lazy: the train flags are generated from TrainConfig, so even
``ganx --help`` imports ganx (and torch) already; the CLI is the top layer and imports downwards only.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from typing import List, Optional

from ganx._limits import LimitError
from ganx.cli import bench, info, sample, train
from ganx.cli.errors import UserError
from ganx.data import DataError
from ganx.train.checkpoint import CheckpointError
from ganx.train.config import ConfigError

__all__ = ["main", "build_parser", "UserError"]

COMMANDS = {"train": train, "sample": sample, "info": info, "bench": bench}  # in the order --help lists them


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the message and where the usage is, not the whole usage
    (the train command's is 21 lines, and the error came last)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ganx", description="ganx: GAN training with fused C++/CUDA kernels.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS.values():
        command.add_parser(sub)
    return p


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _reject_unknown(sub: argparse.ArgumentParser, extra: List[str]) -> None:
    """An unknown flag of a command: that command's usage and error (argparse would print the
    top-level `ganx` usage), with the closest valid flag when there is one."""
    flags = [o for a in sub._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for arg in extra:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=", 1)[0], flags, n=1, cutoff=0.75)
            if close:
                hints.append(f"{arg.split('=', 1)[0]}: did you mean {close[0]}?")
    sub.error(f"unrecognized arguments: {' '.join(extra)}" + ("".join(f"; {h}" for h in hints)))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        _reject_unknown(_subparser(parser, args.command), extra)
    try:
        return COMMANDS[args.command].run(args)
    except (UserError, DataError, ConfigError, CheckpointError, LimitError) as e:
        print(f"ganx {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno is None:
            raise
        # The machine, not the program: a full disk (ENOSPC), a vanished or read-only folder...
        # One line naming the file, as for any other error of what ganx was given.
        where = f" ({e.filename})" if e.filename else ""
        print(f"ganx {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganx: interrupted", file=sys.stderr)
        return 130
