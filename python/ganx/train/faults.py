"""Reliability helpers of the training loop: graceful stop on SIGINT/SIGTERM, non-finite loss
detection, and the fault-injection hooks of file writing that the tests drive through environment
variables (a real ``python -m ganx train`` process can be made to hit a full disk or a kill -9).
NaN losses and slow steps are planted by tests/faulty_ganx.py, outside ganx.

Test hooks (never set them in production; they only exist to prove the recovery paths):

* ``GANX_TEST_FAIL_SAVE=K``: the K-th checkpoint save of the process (1-based) fails half-way
  with ``OSError(ENOSPC)``, as a full disk would make it.
* ``GANX_TEST_KILL_AT=POINT[:N]``: the process kills itself with SIGKILL (no clean-up of any
  kind, as ``kill -9`` or a power cut) the N-th time (default 1st) it reaches POINT. Points:
  ``save:tmp`` (a checkpoint's temporary file is written, not yet renamed), ``save:previous``
  (previous.pt updated, last.pt not yet replaced), ``save:done``, ``write:NAME`` (the temporary
  file of NAME, e.g. log.jsonl or config.yaml, is written, not yet renamed) and ``log:torn``
  (half of a log line is written).
"""
from __future__ import annotations

import errno
import os
import signal
import threading
from typing import Optional

__all__ = ["NonFiniteLossError", "GracefulStop", "maybe_fail_save", "kill_point"]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; the message names the step and the loss."""

    def __init__(self, step: int, name: str, value: float):
        self.step, self.name, self.value = step, name, value
        super().__init__(f"non-finite {name} = {value} at step {step}")


def _env_int(name: str) -> Optional[int]:
    v = os.environ.get(name)
    try:
        return int(v) if v else None
    except ValueError:
        return None


_saves = 0


def maybe_fail_save(f) -> None:
    """The test hook GANX_TEST_FAIL_SAVE: called after torch.save wrote the temporary file;
    tears it (as a disk that filled up mid-write leaves it) and raises ENOSPC."""
    global _saves
    at = _env_int("GANX_TEST_FAIL_SAVE")
    if at is None:
        return
    _saves += 1
    if _saves == at:
        f.flush()
        f.seek(max(0, f.tell() // 2))
        f.truncate()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


_kill_hits = {}


def kill_point(name: str) -> None:
    """The test hook GANX_TEST_KILL_AT: SIGKILL this process at a named point."""
    v = os.environ.get("GANX_TEST_KILL_AT")
    if not v:
        return
    point, _, n = v.rpartition(":") if v.rsplit(":", 1)[-1].isdigit() else (v, "", "1")
    if point != name:
        return
    _kill_hits[name] = _kill_hits.get(name, 0) + 1
    if _kill_hits[name] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


class GracefulStop:
    """Context manager: while active, SIGINT and SIGTERM only set :attr:`requested`, so the
    training loop can finish its step, write a checkpoint and exit cleanly. A second SIGINT
    raises KeyboardInterrupt as usual (for a user who does not want to wait). Outside the main
    thread (where Python cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested: Optional[str] = None
        self._old = {}

    def _handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = name

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()
