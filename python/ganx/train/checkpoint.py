"""Atomic checkpoint files and RNG-state capture in plain types (torch.load(weights_only=True))."""
from __future__ import annotations

import errno
import glob
import os
import pickle
import random
import tempfile
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = ["save_atomic", "load_checkpoint", "capture_rng", "restore_rng", "CheckpointError",
           "CheckpointSaveError", "find_resumable"]

FORMAT = "ganx-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, truncated, corrupted, untrusted, not ganx's);
    the message names the file."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (e.g. the disk is full); the previous file is untouched."""


def save_atomic(obj: Any, path, previous: Optional[str] = None) -> None:
    """torch.save to a temporary file in the same folder, fsync it, then os.replace onto
    ``path`` and fsync the folder. A crash at any point leaves either the old file or the
    new one at ``path``, never a torn one. With ``previous`` (a file name in the same folder),
    the file being replaced is kept under that name once the new one is safely written, so a
    run always has a fallback if its newest checkpoint later turns out to be unreadable."""
    from ganx.train import faults

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            faults.maybe_fail_save(f)  # test hook: GANX_TEST_FAIL_SAVE (simulated full disk)
            f.flush()
            os.fsync(f.fileno())
        if previous and os.path.isfile(path):
            # A hard link keeps `path` in place the whole time (no window without a checkpoint).
            prev = os.path.join(folder, previous)
            ptmp = prev + ".tmp"
            try:
                if os.path.exists(ptmp):
                    os.unlink(ptmp)
                os.link(path, ptmp)
                os.replace(ptmp, prev)
            except OSError:  # filesystems without hard links: no fallback copy this time
                pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (not possible on every OS/filesystem)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_checkpoint(path, map_location="cpu") -> Dict[str, Any]:
    """Load a ganx checkpoint safely: ``weights_only=True`` (tensors and plain types only), so
    an untrusted file can never run code. Every failure is a :class:`CheckpointError` (or
    FileNotFoundError) naming the file."""
    path = os.fspath(path)
    if os.path.isdir(path):  # a run folder: its latest checkpoint
        path = os.path.join(path, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    _check_is_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "weights_only" in str(e).lower():
            first = str(e).strip().splitlines()
            raise CheckpointError(
                f"checkpoint {path!r} holds objects other than tensors and plain data; ganx refuses to "
                f"load it (unpickling it could run arbitrary code). Detail: "
                f"{next((ln for ln in first if 'Unsupported' in ln or 'global' in ln), first[0] if first else '')}"
            ) from None
        raise CheckpointError(f"checkpoint {path!r} is corrupted ({e})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError, IndexError,
            AttributeError, TypeError, MemoryError, OverflowError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupted and cannot be read ({msg})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} is not a ganx checkpoint")
    for key in ("step", "config", "G", "D", "rng"):
        if key not in ckpt:
            raise CheckpointError(f"checkpoint {path!r} is incomplete (no {key!r})")
    return ckpt


def _check_is_archive(path: str) -> None:
    """A ganx checkpoint is a torch.save zip archive; anything else (a README, an image, an old
    pickle-format file) is reported as "not a checkpoint" before torch.load, which would read
    it as a pickle and talk about untrusted objects."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"checkpoint {path!r} cannot be read ({e.strerror or e})") from None
    if not head:
        raise CheckpointError(f"checkpoint {path!r} is empty (truncated or corrupted)")
    if head != b"PK\x03\x04":
        raise CheckpointError(f"{path!r} is not a ganx checkpoint (not a torch.save archive; checkpoints "
                              f"are the .pt files that ganx train writes into RUN/checkpoints/)")


def candidates(run_dir) -> List[str]:
    """The checkpoint files of a run folder, newest first (by modification time, then name)."""
    files = glob.glob(os.path.join(os.fspath(run_dir), "checkpoints", "*.pt"))
    return sorted(files, key=lambda f: (os.path.getmtime(f), os.path.basename(f) == "last.pt"), reverse=True)


def find_resumable(run_dir, map_location="cpu") -> Tuple[Optional[str], Optional[Dict[str, Any]], List[str]]:
    """For ``--resume auto``: the newest checkpoint of ``run_dir`` that loads, with its content,
    and the messages of the newer ones that did not (truncated, corrupted...). (None, None, [])
    when the run has no checkpoint at all."""
    problems: List[str] = []
    best = None
    for f in candidates(run_dir):
        try:
            ck = load_checkpoint(f, map_location)
        except (CheckpointError, FileNotFoundError) as e:
            problems.append(str(e))
            continue
        if best is None or int(ck["step"]) > int(best[1]["step"]):
            best = (f, ck)
    if best is None:
        return None, None, problems
    return best[0], best[1], problems


def capture_rng() -> Dict[str, Any]:
    """Global RNG states as tensors / plain types (numpy's array becomes a tensor)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),  # the 625 ints of the Mersenne Twister
        "python_gauss": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(int(v) for v in state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
