#!/usr/bin/env python
"""Does the CPU output-buffer cache of the BCE losses pay for itself? A/B in two processes,
one with the cache (default GANX_CPU_BUFFER_CACHE_MB) and one with GANX_CPU_BUFFER_CACHE_MB=0,
alternating, on the training-step pattern (D loss on 2 x N logits, forward + backward, the
gradients freed before the next call): N = 1M and 4M fixed, and N varying in [1M, 4M].

    python benchmarks/bench_buffer_cache.py [--rounds 2] [--threads 2]

Prints a Markdown table (median and p20/p80 in ms, peak RSS) with the machine's load average.
"""
import argparse
import json
import os
import subprocess
import sys
import time

CASES = {"2 x 1M": [1 << 20] * 40, "2 x 4M": [4 << 20] * 20,
         "2 x (1M..4M, varying)": [int((1 << 20) * (1 + 3 * ((i * 0.618) % 1))) for i in range(30)]}


def worker(threads: int) -> None:
    import torch

    import ganx.functional as GF

    torch.set_num_threads(threads)
    res = {}
    for label, sizes in CASES.items():
        fixed = len(set(sizes)) == 1
        inputs = [(torch.randn(sizes[0], requires_grad=True), torch.randn(sizes[0], requires_grad=True))] if fixed \
            else None
        ts = []
        for _ in range(3):
            for n in sizes:
                r, f = inputs[0] if fixed else (torch.randn(n, requires_grad=True), torch.randn(n, requires_grad=True))
                t0 = time.perf_counter()
                gr, gf = torch.autograd.grad(GF.bce_discriminator_loss(r, f), (r, f))
                del gr, gf
                ts.append(time.perf_counter() - t0)
        ts.sort()
        res[label] = [1e3 * ts[len(ts) // 2], 1e3 * ts[len(ts) // 5], 1e3 * ts[4 * len(ts) // 5]]
    with open("/proc/self/status") as fh:
        hwm = next((int(x.split()[1]) for x in fh if x.startswith("VmHWM")), 0)
    print(json.dumps({"res": res, "peak_rss_mib": hwm / 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.threads)
        return 0
    runs = {"cache on": [], "cache off": []}
    load0 = os.getloadavg()[0]
    for _ in range(a.rounds):
        for name, env in (("cache on", {}), ("cache off", {"GANX_CPU_BUFFER_CACHE_MB": "0"})):
            e = {k: v for k, v in os.environ.items() if k != "GANX_CPU_BUFFER_CACHE_MB"}
            out = subprocess.run([sys.executable, __file__, "--worker", "--threads", str(a.threads)],
                                 env={**e, **env}, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    print(f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}, {a.threads} threads, {a.rounds} rounds "
          f"(best median of the rounds)\n")
    print("| case | cache on: median (p20-p80) ms | cache off: median (p20-p80) ms | off / on |")
    print("|---|---|---|---|")
    for label in CASES:
        best = {k: min((r["res"][label] for r in v), key=lambda x: x[0]) for k, v in runs.items()}
        on, off = best["cache on"], best["cache off"]
        print(f"| {label} | {on[0]:.2f} ({on[1]:.2f}-{on[2]:.2f}) | {off[0]:.2f} ({off[1]:.2f}-{off[2]:.2f}) | "
              f"{off[0] / on[0]:.2f}x |")
    print(f"| peak RSS | {max(r['peak_rss_mib'] for r in runs['cache on']):.0f} MiB | "
          f"{max(r['peak_rss_mib'] for r in runs['cache off']):.0f} MiB | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
