"""Atomic checkpoint files and RNG-state capture in plain types (torch.load(weights_only=True))."""
from __future__ import annotations

import os
import random
import tempfile
from typing import Any, Dict

import numpy as np
import torch

__all__ = ["save_atomic", "load_checkpoint", "capture_rng", "restore_rng"]


def save_atomic(obj: Any, path) -> None:
    """torch.save to a temporary file in the same folder, fsync it, then os.replace onto
    ``path`` and fsync the folder. A crash at any point leaves either the old file or the
    new one at ``path``, never a torn one."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
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
    """Load a ganx checkpoint safely (weights_only=True: tensors and plain types only)."""
    path = os.fspath(path)
    if os.path.isdir(path):  # a run folder: its latest checkpoint
        path = os.path.join(path, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "ganx-checkpoint-v1":
        raise ValueError(f"{path!r} is not a ganx checkpoint")
    return ckpt


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
