"""Reliability helpers of the training loop: graceful stop on SIGINT/SIGTERM and non-finite loss
detection. ganx has no fault-injection hooks: the tests plant faults (a NaN loss, a slow step, a
full disk, a kill -9 at a named point of a save) by monkeypatching, in-process or, for a real
``ganx train`` process, through tests/faulty_ganx.py.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Optional

__all__ = ["NonFiniteLossError", "GracefulStop", "StopRaises", "Stopped"]


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or Inf; the message names the step and the loss."""

    def __init__(self, step: int, name: str, value: float):
        self.step, self.name, self.value = step, name, value
        super().__init__(f"non-finite {name} = {value} at step {step}")


class GracefulStop:
    """Context manager: while active, SIGINT and SIGTERM only set :attr:`requested`, so the
    training loop can finish its step, write a checkpoint and exit cleanly. A second SIGINT
    raises KeyboardInterrupt as usual (for a user who does not want to wait). Outside the main
    thread (where Python cannot install handlers) it does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True):
        self.requested: Optional[str] = None
        self._old = {}
        self.announce = announce

    def _handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = name
        if self.announce:
            again = " (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""
            print(f"\nganx: {name}: stopping after this step{again}", file=sys.stderr, flush=True)

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old.clear()


class Stopped(Exception):
    """Raised by :class:`StopRaises` when SIGINT or SIGTERM arrives."""

    def __init__(self, signal_name: str):
        self.signal_name = signal_name
        super().__init__(f"stopped by {signal_name}")


class StopRaises(GracefulStop):
    """Like :class:`GracefulStop`, for work that has no step to finish (the end-of-run metrics):
    SIGINT and SIGTERM raise :class:`Stopped` at once, so the caller can stop cleanly instead of
    being killed."""

    def _handler(self, signum, frame):
        self.requested = signal.Signals(signum).name
        raise Stopped(self.requested)
