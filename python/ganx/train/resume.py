"""The resume policies of a training run: what ``--resume auto`` picks in a run folder, and the
config of a resumed run (the checkpoint's, with the overrides allowed on top)."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, Optional, Tuple

from ganx.data import ImageDataset
from ganx.train.checkpoint import MODEL_KEYS, CheckpointError, find_resumable, run_dir_of
from ganx.train.conditioning import describe_conditioning, run_conditioning
from ganx.train.config import ConfigError, TrainConfig
from ganx.train.rebuild import check_model_size

__all__ = ["auto_resume_path", "resume_config", "check_resume_conditioning"]


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


def resume_config(ckpt: Dict[str, Any], path, overrides: Optional[Dict[str, Any]] = None) -> Tuple[str, TrainConfig]:
    """The config of a run resumed from ``ckpt`` (read from ``path``, a checkpoint or a run folder):
    the checkpoint's, ``overrides`` on top (e.g. a larger ``steps``). Returns ``(the checkpoint's
    file, config)``.

    Where the resumed run writes is never taken from the checkpoint (a file can come from
    anywhere): ``overrides['out']`` if given, else the run folder the checkpoint lies in
    (``RUN/checkpoints/*.pt`` -> ``RUN``); a checkpoint elsewhere needs ``out``. Options that
    change the model (image size, widths...) cannot be overridden (a ConfigError), and models
    too large for this machine are refused (a CheckpointError)."""
    overrides = dict(overrides or {})
    src = os.fspath(path)
    if os.path.isdir(src):
        src = os.path.join(src, "checkpoints", "last.pt")
    saved = dict(ckpt["config"])
    # A checkpoint from before the memory_format option ran NCHW; keep it so (bit-identical resume).
    saved.setdefault("memory_format", "contiguous")
    if ckpt.get("sample_every_unit") != "steps" and saved.get("sample_every"):
        # A checkpoint from before sample_every counted steps: its value was in epochs (1
        # by default), which read as steps would write a grid at every step.
        saved["sample_every"] = None
    if overrides.get("out") is None:
        overrides.pop("out", None)
        out = run_dir_of(path)
        if out is None:
            raise ConfigError(f"checkpoint {src!r} does not lie in a run folder's checkpoints/; pass --out RUN "
                              f"to say where the resumed run writes")
        overrides["out"] = out
    changed = [k for k in MODEL_KEYS if k in overrides and k in saved and overrides[k] != saved[k]
               and not (k == "channels" and overrides[k] is None)]
    if changed:
        raise ConfigError(f"checkpoint {src!r}: a resumed run keeps its model; cannot change "
                          + ", ".join(f"{k} ({saved[k]!r} -> {overrides[k]!r})" for k in changed)
                          + " (start a new run in another --out for that)")
    try:
        cfg = TrainConfig.from_dict({**saved, **overrides})
    except ConfigError as e:
        raise ConfigError(f"checkpoint {src!r}: its config is not usable: {e}") from None
    check_model_size(ckpt, src)
    return src, cfg


def check_resume_conditioning(ckpt: Dict[str, Any], src: str, cfg: TrainConfig, dataset: ImageDataset) -> None:
    """The conditioning comes from the data (its labels or its embeddings): data that would
    condition the checkpoint's models otherwise is a model change, refused (a ConfigError) like
    the options :func:`resume_config` refuses."""
    saved_g = ckpt.get("generator_config")
    if isinstance(saved_g, dict):
        was = describe_conditioning(saved_g.get("num_classes"), saved_g.get("embedding_dim"))
        now = describe_conditioning(*run_conditioning(cfg.conditional, dataset))
        if was != now:
            raise ConfigError(f"checkpoint {src!r}: a resumed run keeps its model, which is {was}, but the data "
                              f"{dataset.name!r} would make it {now} (resume with the data the run was trained on)")
