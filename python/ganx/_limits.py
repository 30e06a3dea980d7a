"""Resource limits that keep a small input from costing a large amount of memory: the memory
the machine has available now, and one-line refusals that say how much was asked for."""
from __future__ import annotations

import os

__all__ = ["available_memory", "fmt_bytes", "check_bytes", "LimitError"]


class LimitError(ValueError):
    """A limit ganx reads from the environment (GANX_MEMORY_LIMIT) that it cannot use; the
    message names the variable and what it expects."""


def available_memory() -> int:
    """Bytes of memory available to this process now (Linux: MemAvailable, capped by a cgroup
    limit; elsewhere: physical memory). ``GANX_MEMORY_LIMIT`` (bytes, K/M/G suffix) overrides it."""
    env = os.environ.get("GANX_MEMORY_LIMIT")
    if env:
        s = env.strip().upper()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(s[-1:], 1)
        try:
            v = int(float(s[:-1] if s[-1:] in "KMGT" else s) * mult)
        except (ValueError, OverflowError):
            v = -1
        if v <= 0:
            raise LimitError(f"GANX_MEMORY_LIMIT={env!r}: expected a positive number of bytes (e.g. 8G, 512M)")
        return v
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    for cg in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(cg) as f:
                v = f.read().strip()
            if v.isdigit() and int(v) < (1 << 60):
                avail = min(avail, int(v)) if avail else int(v)
        except OSError:
            pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 34
    return avail


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_bytes(needed: float, what: str, exc=ValueError, fraction: float = 0.8) -> None:
    """Raise ``exc`` when ``needed`` bytes exceed ``fraction`` of the available memory."""
    budget = available_memory() * fraction
    if needed > budget:
        raise exc(f"{what} would need about {fmt_bytes(needed)} of memory, more than the {fmt_bytes(budget)} "
                  f"available; refused (set GANX_MEMORY_LIMIT to change the limit)")
