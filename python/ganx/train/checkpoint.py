"""Atomic checkpoint files and RNG-state capture in plain types (torch.load(weights_only=True))."""
from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import random
import zipfile
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ganx._io import atomic_save
from ganx.train.config import MAX_SEED, ConfigError, _short, load_yaml_file
from ganx.train.rundir import inside, safe_subdir

__all__ = ["save_atomic", "load_checkpoint", "capture_rng", "restore_rng", "CheckpointError",
           "CheckpointSaveError", "find_resumable", "state_digest", "run_dir_of", "restore_part",
           "check_data_position", "RunCheckpoint"]

FORMAT = "ganx-checkpoint-v1"
# A step beyond this is not a step any run reached (and would overflow loops and logs).
MAX_STEP = 10 ** 12


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, truncated, corrupted, untrusted, not ganx's);
    the message names the file."""


class CheckpointSaveError(OSError):
    """Writing a checkpoint failed (e.g. the disk is full); the previous file is untouched."""


def save_atomic(obj: Any, path, previous: Optional[str] = None) -> None:
    """Write a checkpoint (or any torch object) atomically (ganx._io.atomic_save: a crash at any
    point leaves either the old file or the new one at ``path``, never a torn one). A ganx
    checkpoint gets the SHA-256 digest of its state, which load_checkpoint verifies. With
    ``previous`` (a file name in the same folder), the file being replaced is kept under that name
    once the new one is safely written, so a run always has a fallback if its newest checkpoint
    later turns out to be unreadable."""
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        # The digest of the state itself, verified by load_checkpoint: a bit flipped anywhere
        # after this point (disk, copy, transfer) is detected, not trained on.
        obj = {k: v for k, v in obj.items() if k != "integrity"}
        obj["integrity"] = {"algorithm": "sha256", "digest": state_digest(obj)}
    atomic_save(obj, path, previous)


def _digest_into(h, obj) -> None:
    # A canonical walk: type tags, lengths and raw tensor bytes, so two states hash alike
    # exactly when they are equal (lists and tuples alike: pickling may turn one into the other).
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"d{len(obj)}".encode())
        for k, v in obj.items():
            _digest_into(h, k)
            _digest_into(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"l{len(obj)}".encode())
        for v in obj:
            _digest_into(h, v)
    elif isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        h.update(f"s{len(b)}:".encode() + b)
    elif isinstance(obj, bytes):
        h.update(f"b{len(obj)}:".encode() + obj)
    elif obj is None or isinstance(obj, (bool, int, float)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, torch.Size):
        _digest_into(h, tuple(obj))
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def state_digest(obj) -> str:
    """SHA-256 hex digest of a checkpoint's state (without its ``integrity`` entry)."""
    h = hashlib.sha256()
    _digest_into(h, {k: v for k, v in obj.items() if k != "integrity"} if isinstance(obj, dict) else obj)
    return h.hexdigest()


def _verify_archive(path: str) -> None:
    """The archive's own CRC-32s (torch.load does not check them): catches a flipped bit in
    checkpoints written before the state digest existed, too."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        return  # not a zip (legacy torch format or garbage): torch.load reports it
    except (OSError, EOFError, ValueError, RuntimeError, zipfile.LargeZipFile) as e:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupted and cannot be read ({e})") from None
    if bad is not None:
        raise CheckpointError(f"checkpoint {path!r} is corrupted: its entry {bad!r} fails its CRC check "
                              f"(the bytes on disk changed after it was written)")


def _check_plain(path: str, ckpt: Dict[str, Any]) -> None:
    step = ckpt["step"]
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise CheckpointError(f"checkpoint {path!r} has an invalid step {step!r} (an integer in [0, {MAX_STEP}])")
    if not isinstance(ckpt["config"], dict):
        raise CheckpointError(f"checkpoint {path!r} has no valid config (got {type(ckpt['config']).__name__})")
    for key in ("G", "D"):
        if not isinstance(ckpt[key], dict):
            raise CheckpointError(f"checkpoint {path!r}: {key!r} is not a state dict")
    if not isinstance(ckpt["rng"], dict):
        raise CheckpointError(f"checkpoint {path!r}: 'rng' is not a mapping")


def load_checkpoint(path, map_location="cpu", verify: bool = True) -> Dict[str, Any]:
    """Load a ganx checkpoint safely: ``weights_only=True`` (tensors and plain types only), so
    an untrusted file can never run code. With ``verify`` (the default) the archive's CRCs and
    the state's SHA-256 digest (checkpoints of ganx >= 0.x carry one) are checked, so a
    corrupted file is reported instead of used. Every failure is a :class:`CheckpointError` (or
    FileNotFoundError) naming the file."""
    path = os.fspath(path)
    if os.path.isdir(path):  # a run folder: its latest checkpoint
        path = os.path.join(path, "checkpoints", "last.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    _check_is_archive(path)
    if verify:
        _verify_archive(path)
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
    integrity = ckpt.get("integrity")
    if verify and integrity is not None:
        if not isinstance(integrity, dict) or integrity.get("algorithm") != "sha256":
            raise CheckpointError(f"checkpoint {path!r} has an integrity record ganx cannot check ({integrity!r:.80})")
        if state_digest(ckpt) != integrity.get("digest"):
            raise CheckpointError(f"checkpoint {path!r} is corrupted: its content does not match the SHA-256 "
                                  f"digest written with it")
    _check_plain(path, ckpt)
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


def run_dir_of(path) -> Optional[str]:
    """The run folder a checkpoint belongs to: the folder itself for a run folder, the parent of
    ``checkpoints/`` for a file in one; None for a file elsewhere."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    parent = os.path.dirname(path) or "."
    if os.path.basename(os.path.abspath(parent)) == "checkpoints":
        return os.path.dirname(parent) or (os.path.dirname(os.path.abspath(parent)))
    return None


def candidates(run_dir, problems: Optional[List[str]] = None) -> List[str]:
    """The checkpoint files of a run folder, newest first (by modification time, then name).
    Links that leave the run folder, dangling links and link loops are skipped (and described
    in ``problems``)."""
    run_dir = os.fspath(run_dir)
    folder = os.path.join(run_dir, "checkpoints")
    if not inside(run_dir, folder):
        if problems is not None:
            problems.append(f"{folder!r} is a symbolic link that leads out of the run folder; its checkpoints "
                            f"are not used")
        return []
    out = []
    for f in glob.glob(os.path.join(glob.escape(folder), "*.pt")):
        try:
            if not inside(run_dir, f):
                raise CheckpointError(f"{f!r} is a symbolic link that leads out of the run folder")
            st = os.stat(f)  # follows links: dangling ones and loops raise here
        except CheckpointError as e:
            if problems is not None:
                problems.append(str(e))
            continue
        except OSError as e:
            if problems is not None:
                problems.append(f"{f!r} cannot be read ({e.strerror or e}; a dangling link or a link loop?)")
            continue
        out.append((st.st_mtime, os.path.basename(f) == "last.pt", f))
    return [f for _, _, f in sorted(out, reverse=True)]


MODEL_KEYS = ("generator", "discriminator", "image_size", "channels", "conditional", "latent_dim", "g_width",
              "d_width", "spectral_norm", "minibatch_std")


def _run_expectations(run_dir: str) -> Tuple[Optional[dict], Optional[int], List[str]]:
    """What the run folder itself says about its run: config.yaml, and the last logged step."""
    notes: List[str] = []
    cfg = None
    p = os.path.join(run_dir, "config.yaml")
    if os.path.isfile(p):
        try:
            c = load_yaml_file(p, "the run's config.yaml")  # bounded: an alias bomb is refused quickly
            cfg = c if isinstance(c, dict) else None
        except ConfigError as e:
            notes.append(f"{e}; it is not used to check the checkpoints")
            cfg = None
    last = None
    log = os.path.join(run_dir, "log.jsonl")
    if os.path.isfile(log):
        with open(log, "rb") as f:
            for line in f:
                try:
                    row = json.loads(line)
                    s = row.get("step") if isinstance(row, dict) else None
                except ValueError:
                    continue
                if isinstance(s, int) and not isinstance(s, bool):
                    last = s if last is None else max(last, s)
    return cfg, last, notes


def _implausible(ck: Dict[str, Any], run_cfg: Optional[dict], last_logged: Optional[int]) -> Optional[str]:
    cfg = ck["config"]
    step = int(ck["step"])
    own_steps = cfg.get("steps")
    if isinstance(own_steps, int) and step > own_steps:
        return f"its step {step} is beyond the steps of its own config ({own_steps})"
    if run_cfg is not None:
        diff = [k for k in MODEL_KEYS if k in run_cfg and k in cfg and run_cfg[k] != cfg[k]
                and not (k == "channels" and run_cfg[k] is None)]
        if diff:
            return ("its model does not match the run's config.yaml ("
                    + ", ".join(f"{k}: {_short(cfg[k])} vs {_short(run_cfg[k])}" for k in diff) + ")")
    if last_logged is not None:
        every = cfg.get("log_every") if isinstance(cfg.get("log_every"), int) else 1
        if step > last_logged + max(1, every):
            return f"its step {step} is beyond the run's log, which ends at step {last_logged}"
    return None


def find_resumable(run_dir, map_location="cpu") -> Tuple[Optional[str], Optional[Dict[str, Any]], List[str]]:
    """For ``--resume auto``: the checkpoint of ``run_dir`` with the highest *verified* step (CRCs
    and digest checked) that is plausible for the run (its model matches the run's config.yaml,
    its step is within its own config's steps and the run's log), with its content, and the
    messages of the ones skipped (truncated, corrupted, implausible, dangling links...).
    (None, None, []) when the run has no checkpoint at all."""
    run_dir = os.fspath(run_dir)
    problems: List[str] = []
    run_cfg, last_logged, notes = _run_expectations(run_dir)
    best = None
    for f in candidates(run_dir, problems):
        try:
            ck = load_checkpoint(f, map_location)
        except (CheckpointError, FileNotFoundError, OSError) as e:
            problems.append(str(e))
            continue
        why = _implausible(ck, run_cfg, last_logged)
        if why:
            problems.append(f"checkpoint {f!r} is not used: {why}")
            continue
        if best is None or int(ck["step"]) > int(best[1]["step"]):
            best = (f, ck)
    if best is None:
        return None, None, problems
    return best[0], best[1], notes + problems


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


def restore_part(name: str, what: str, fn) -> None:
    """Run ``fn``, which loads one part of the checkpoint ``name`` into a run (its ``what``: "generator
    weights", "RNG state"...); what does not fit (a wrong shape, a missing key, a bad value) is a
    CheckpointError naming the part, with the first lines of the reason."""
    try:
        fn()
    except CheckpointError:
        raise
    except Exception as e:  # RuntimeError (shapes), KeyError, TypeError, ValueError, IndexError
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
        detail = " ".join(lines[:2])
        if len(detail) > 300:
            detail = detail[:300] + "..."
        raise CheckpointError(f"{name}: its {what} cannot be loaded into this run ({detail})") from None


def check_data_position(data) -> None:
    """A restored BatchIterator's seed and position are ones a run can have (a ValueError otherwise)."""
    if not 0 <= data.seed <= MAX_SEED:
        raise ValueError(f"data seed {data.seed} is out of range [0, {MAX_SEED}]")
    if not (0 <= data.epoch <= 10 ** 12 and 0 <= data.index < data.batches_per_epoch):
        raise ValueError(f"data position (epoch {data.epoch}, batch {data.index}) is out of range "
                         f"for {data.batches_per_epoch} batches per epoch")


class RunCheckpoint:
    """A run folder's ``checkpoints/last.pt``, with the file it replaces kept as ``previous.pt``
    (the fallback of ``--resume auto``) when that one verifies."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, "checkpoints", "last.pt")
        self.verified: Optional[bool] = None  # whether last.pt holds a verified checkpoint (None: not known yet)

    def loaded_from(self, src: str) -> None:
        """The run was resumed from ``src``, loaded and verified just now: when that is last.pt,
        it is known to verify."""
        try:
            if os.path.samefile(src, self.path):
                self.verified = True
        except OSError:
            pass

    def last_is_verified(self) -> bool:
        """Whether last.pt now holds a checkpoint that passes verification (this run wrote it, it
        is the one resumed from, or it loads and verifies now)."""
        if self.verified is None:
            try:
                load_checkpoint(self.path)
                self.verified = True
            except (CheckpointError, OSError):
                self.verified = False
        return self.verified

    def save(self, state, path: Optional[str] = None) -> str:
        """Write ``state()`` (a function returning the checkpoint dict) to ``path`` (default
        last.pt) atomically. A failed write (e.g. a full disk) raises CheckpointSaveError and leaves
        the previous file intact."""
        path = path or self.path
        if os.path.abspath(os.path.dirname(path)) == os.path.abspath(os.path.join(self.run_dir, "checkpoints")):
            safe_subdir(self.run_dir, "checkpoints")  # never through a link out of the run folder
        # The file being replaced becomes previous.pt (the fallback) only when it is a verified
        # checkpoint: after a resume from previous.pt past a corrupt last.pt, the corrupt file is
        # overwritten, never rotated over the one good fallback.
        rotate = path == self.path and self.last_is_verified()
        try:
            save_atomic(state(), path, previous="previous.pt" if rotate else None)
        except OSError as e:
            intact = f"; the previous checkpoint {path!r} is intact" if os.path.isfile(path) else ""
            reason = getattr(e.__cause__, "strerror", None) or e.strerror or e
            raise CheckpointSaveError(e.errno, f"could not write checkpoint {path!r}: {reason}{intact}") from e
        if path == self.path:
            self.verified = True
        return path
