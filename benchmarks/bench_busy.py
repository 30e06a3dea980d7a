"""A busy machine: the default ``ganx train`` with other CPU-bound processes running.

For each setting (environment variables and ``ganx train`` flags) and each number of competing
processes (``python -c "while True: pass"``), runs the default training command for a fixed
wall-clock window and measures its steady-state speed in steps/s from the times its log lines
appear (``--log-every 10``; the first log line, start-up and warm-up, is not counted).

    python benchmarks/bench_busy.py [--window 25] [--competitors 0 2 4] [--out results.md]

OpenMP threads spin-wait for work (libgomp's default): when another process holds a core, a
2-thread run can spend most of its time spinning while the thread it waits for is descheduled.
The table says how much of its quiet speed a run keeps. The quiet machine and its load are
printed with the table: a timing taken while anything else runs is not a quiet figure.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

# name -> (extra environment, extra ganx train flags). "current" is ganx as a user runs it.
SETTINGS: Dict[str, Tuple[Dict[str, str], List[str]]] = {
    "current": ({}, []),
    "fixed 2 threads (OMP_NUM_THREADS=2)": ({"OMP_NUM_THREADS": "2"}, []),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "GOMP_SPINCOUNT=10000": ({"GOMP_SPINCOUNT": "10000"}, []),
    "GOMP_SPINCOUNT=1000": ({"GOMP_SPINCOUNT": "1000"}, []),
    "--threads 1": ({}, ["--threads", "1"]),
}


def _spinners(n: int) -> List[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _run(env_extra: Dict[str, str], flags: Sequence[str], window: float, log_every: int) -> Optional[float]:
    """Steps/s of `ganx train` over `window` seconds after its first log line (None: no 2 lines)."""
    out = tempfile.mkdtemp(prefix="ganx-busy-")
    env = dict(os.environ, **env_extra)
    cmd = [sys.executable, "-m", "ganx", "train", "--steps", "100000", "--no-metrics", "--out", out,
           "--log-every", str(log_every), "--sample-every", "100000", "--checkpoint-every", "100000",
           "--no-progress", *flags]
    log = os.path.join(out, "log.jsonl")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: List[Tuple[float, int]] = []
    deadline = time.monotonic() + window + 120  # start-up may be slow on a busy machine
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                with open(log) as f:
                    lines = f.read().splitlines()
            except FileNotFoundError:
                continue
            steps = [json.loads(x)["step"] for x in lines if x.endswith("}")]
            if steps and (not seen or steps[-1] != seen[-1][1]):
                seen.append((time.monotonic(), steps[-1]))
                if seen[-1][0] - seen[0][0] >= window:
                    break
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(out, ignore_errors=True)
    if len(seen) < 2:
        print(f"  no speed measured ({len(seen)} log lines)", file=sys.stderr)
        return None
    (t0, s0), (t1, s1) = seen[0], seen[-1]
    return (s1 - s0) / (t1 - t0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--window", type=float, default=25.0, help="seconds measured per cell (default 25)")
    p.add_argument("--competitors", type=int, nargs="+", default=[0, 2, 4])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--out", help="write the table (markdown) here too")
    a = p.parse_args(argv)

    import platform
    import torch
    head = [f"# Default `ganx train` on a busy machine ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
            f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
            f"torch {torch.__version__}; load average before the run {os.getloadavg()[0]:.2f}",
            f"- each cell: steps/s over {a.window:.0f} s of `ganx train` (defaults, --no-metrics, log every "
            f"{a.log_every} steps) after its first log line; competitors: `python -c 'while True: pass'`", ""]
    print("\n".join(head), flush=True)
    results: Dict[Tuple[str, int], Optional[float]] = {}
    for k in a.competitors:
        sp = _spinners(k)
        try:
            time.sleep(1.0 if k else 0.0)
            for name in a.settings:
                env_extra, flags = SETTINGS[name]
                results[name, k] = r = _run(env_extra, flags, a.window, a.log_every)
                print(f"  {name:28s} {k} competitors: {r if r is None else round(r, 2)} steps/s "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
        finally:
            for s in sp:
                s.kill()
            for s in sp:
                s.wait()
    cols = a.competitors
    table = ["| setting | " + " | ".join(f"{k} competing" for k in cols) + " | kept under " +
             " / ".join(str(k) for k in cols if k) + " |",
             "|---|" + "---|" * (len(cols) + 1)]
    for name in a.settings:
        quiet = results.get((name, 0)) if 0 in cols else None
        cells = [("-" if results[name, k] is None else f"{results[name, k]:.2f}") for k in cols]
        kept = [("-" if not quiet or results[name, k] is None else f"{results[name, k] / quiet:.0%}")
                for k in cols if k]
        table.append(f"| {name} | " + " | ".join(cells) + " | " + " / ".join(kept) + " |")
    text = "\n".join(head + table) + "\n"
    print("\n".join(table))
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
