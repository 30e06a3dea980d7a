"""The resume policies of a training run: what ``--resume auto`` picks in a run folder."""
from __future__ import annotations

import sys
from typing import Callable, Optional

from ganx.train.checkpoint import CheckpointError, find_resumable

__all__ = ["auto_resume_path"]


def _warn(msg: str) -> None:
    print(f"ganx: warning: {msg}", file=sys.stderr)


def auto_resume_path(out: str, warn: Callable[[str], None] = _warn) -> Optional[str]:
    """``--resume auto`` in the run folder ``out``: its newest usable checkpoint (each newer one
    that is not, truncated or corrupted say, is passed to ``warn`` and skipped), or None when the
    folder has no checkpoint at all (a fresh run starts there). A folder whose checkpoints are all
    unusable is a :class:`CheckpointError`: starting afresh would silently drop the run."""
    path, _, problems = find_resumable(out)
    for p in problems:
        warn(f"--resume auto: skipping a checkpoint: {p}")
    if path is None and problems:
        raise CheckpointError(f"--resume auto: no usable checkpoint in {out!r} ({len(problems)} skipped, "
                              f"see the warnings above); resume one explicitly with --resume FILE --out "
                              f"{out}, or use another --out")
    return path
