"""CPU threads on a busy machine: use the cores other processes leave free.

torch's OpenMP threads (libgomp) spin-wait for each other between parallel regions. When other
processes hold some of the cores, a thread that the others wait for is often descheduled while
they spin, and a 2-thread run on 2 busy cores can run 5-60x slower than quiet instead of 2-3x
(benchmarks/bench_busy.py; benchmarks/results/busy-machine-*.md). A run on fewer threads than the
free cores does not wait on descheduled threads.

:class:`ThreadGovernor` reads at its start how many threads are running (``/proc/loadavg``) and
then measures, about twice a second, how many cores the *other* processes of
the machine used (``/proc/stat``'s busy time minus this process's own CPU time), and sets torch's
thread count to the cores left free (at least 1, at most the count it started with), with
hysteresis (two readings in a row) so a short burst does not flip it. It acts from the thread
that calls :meth:`poll` (OpenMP's thread count is per calling thread) and gives the original
count back on :meth:`close`. On systems without ``/proc/stat`` it does nothing.

The trainer uses it when ``threads`` is 0 (the default) on the CPU, unless ``OMP_NUM_THREADS``
is set or the run is ``deterministic`` (the user chose). A change of thread count can change the
last bits of a result (a reduction split differently: 1.2e-7 in the weights after 40 steps of a
small model), as between two runs with different ``--threads``; a run that must be bit-identical
to another (a resume compared with an uninterrupted run) sets ``--threads``, ``OMP_NUM_THREADS``
or ``--deterministic``. ``import ganx`` changes no thread setting; only a Trainer's run does, and
it gives the count back when it ends.
"""
from __future__ import annotations

import os
import time
from typing import Callable, List, Optional, Tuple

import torch

__all__ = ["ThreadGovernor", "cpu_times", "running_now"]


def cpu_times(path: str = "/proc/stat") -> Optional[Tuple[float, float]]:
    """``(busy, total)`` CPU seconds of the whole machine since boot, or None where unknown."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    try:
        ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    except ValueError:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    total = sum(ticks)
    return (total - idle) / hz, total / hz


def running_now(path: str = "/proc/loadavg", samples: int = 5, gap: float = 0.01) -> Optional[int]:
    """Threads running on the machine right now (``/proc/loadavg``'s 4th field), the median of a
    few readings, or None where unknown. Includes the caller's own running thread."""
    seen = []
    for i in range(samples):
        try:
            with open(path) as f:
                seen.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return None
        if i + 1 < samples:
            time.sleep(gap)
    return sorted(seen)[len(seen) // 2]


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


class ThreadGovernor:
    """Keeps torch's CPU thread count within the cores that other processes leave free (see the
    module docstring). ``poll()`` is cheap (a clock read) except once per ``interval`` seconds."""

    def __init__(self, interval: float = 0.5, *, read: Callable[[], Optional[Tuple[float, float]]] = cpu_times,
                 own: Callable[[], float] = _own_cpu, clock: Callable[[], float] = time.monotonic,
                 cores: Optional[int] = None, log: Optional[Callable[[str], None]] = None,
                 enabled: bool = True, running: Callable[[], Optional[int]] = running_now):
        self.interval = interval
        self._read, self._own, self._clock = read, own, clock
        self.start_threads = torch.get_num_threads()
        try:
            avail = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            avail = os.cpu_count() or 1
        self.cores = cores if cores is not None else avail
        self.max_threads = max(1, min(self.start_threads, self.cores))
        self.threads = self.start_threads
        self.changes: List[Tuple[float, int, float]] = []  # (time, new thread count, other cores)
        self._log = log
        self._pending: Optional[int] = None
        first = self._read() if enabled else None
        self.active = first is not None and self.max_threads > 1
        self._last = (self._clock(), first, self._own()) if self.active else None
        if self.active:
            # A first choice at once, from the threads running right now (this one excluded),
            # so a run that starts on a busy machine does not spend its first seconds spinning.
            now = running()
            if now is not None:
                want = self._threads_for(float(max(0, now - 1)))
                if want < self.threads:
                    self._set(want, self._last[0], float(now - 1))

    def poll(self) -> int:
        """Re-measure if ``interval`` has passed; returns the thread count in use."""
        if not self.active:
            return self.threads
        now = self._clock()
        t0, m0, o0 = self._last
        if now - t0 < self.interval:
            return self.threads
        m1, o1 = self._read(), self._own()
        self._last = (now, m1, o1)
        if m1 is None or m0 is None:
            return self.threads
        wall = now - t0
        others = max(0.0, ((m1[0] - m0[0]) - (o1 - o0)) / wall)
        want = self._threads_for(others)
        if want == self.threads:
            self._pending = None
        elif want == self._pending:  # two readings in a row
            self._set(want, now, others)
        else:
            self._pending = want
        return self.threads

    def _threads_for(self, others: float) -> int:
        return max(1, min(self.max_threads, int(self.cores - others + 0.5)))

    def _set(self, n: int, now: float, others: float) -> None:
        if self._log is not None:
            self._log(f"ganx: other processes use {others:.1f} of {self.cores} cores: "
                      f"{self.threads} -> {n} CPU threads")
        torch.set_num_threads(n)
        self.threads, self._pending = n, None
        self.changes.append((now, n, round(others, 2)))

    def close(self) -> None:
        """Give back the thread count the governor found."""
        if self.active and self.threads != self.start_threads:
            torch.set_num_threads(self.start_threads)
            self.threads = self.start_threads
        self.active = False
