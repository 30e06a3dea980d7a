#!/usr/bin/env python
"""The quality bar of the default `ganx train`, measured end to end.

Runs the *default* command (conditional GAN on the embedded digits) and its unconditional
twin (`--no-conditional`) as subprocesses, times them wall-clock (including start-up,
classifier training and metrics), and checks:

* wall time <= 5 minutes each (on a 2-core CPU);
* the digits classifier reaches >= 95% on held-out real digits;
* conditional: samples classified as the requested digit >= 90% of the time;
* unconditional: entropy of the predicted-class histogram >= 0.95 ln 10.

The machine's load average is recorded before and after, since other processes inflate
the timings. Usage:

    python scripts/quality.py [--out-dir runs/quality] [--json results.json] [--only conditional|unconditional] [-- extra train flags]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

BAR_SECONDS = 300
BAR_HELDOUT = 0.95
BAR_COND_ACC = 0.90
BAR_ENTROPY = 0.95 * math.log(10)


def loadavg() -> list:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def run(name: str, out_dir: str, extra: list) -> dict:
    run_dir = os.path.join(out_dir, name)
    cmd = [sys.executable, "-m", "ganx", "train", "--out", run_dir, "--no-progress", *extra]
    print("$", " ".join(cmd), flush=True)
    load0, t0 = loadavg(), time.perf_counter()
    p = subprocess.run(cmd, text=True, capture_output=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        print(p.stdout, p.stderr, sep="\n")
        raise SystemExit(f"{name}: ganx train failed (exit {p.returncode})")
    with open(os.path.join(run_dir, "metrics.json")) as f:
        m = json.load(f)
    return {"command": " ".join(cmd[1:]), "wall_seconds": round(wall, 1), "loadavg_before": load0,
            "loadavg_after": loadavg(), "metrics": m}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="runs/quality", help="parent folder of the two run folders")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    ap.add_argument("--only", choices=("conditional", "unconditional"), default=None, help="run just one")
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="flags passed to `ganx train` (after --)")
    args = ap.parse_args()
    extra = [a for a in args.extra if a != "--"]

    import torch

    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu_count": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
               "torch": torch.__version__, "cuda": torch.cuda.is_available(), "runs": {}}
    checks = []
    if args.only in (None, "conditional"):
        r = results["runs"]["conditional"] = run("conditional", args.out_dir, extra)
        m = r["metrics"]
        checks += [("conditional: wall time <= 300 s", r["wall_seconds"], r["wall_seconds"] <= BAR_SECONDS),
                   ("classifier held-out accuracy >= 0.95", m["classifier_heldout_accuracy"],
                    m["classifier_heldout_accuracy"] >= BAR_HELDOUT),
                   ("conditional accuracy >= 0.90", m["classifier_accuracy"], m["classifier_accuracy"] >= BAR_COND_ACC)]
    if args.only in (None, "unconditional"):
        r = results["runs"]["unconditional"] = run("unconditional", args.out_dir, ["--no-conditional", *extra])
        m = r["metrics"]
        checks += [("unconditional: wall time <= 300 s", r["wall_seconds"], r["wall_seconds"] <= BAR_SECONDS),
                   (f"class entropy >= 0.95 ln 10 = {BAR_ENTROPY:.3f}", m["class_entropy"],
                    m["class_entropy"] >= BAR_ENTROPY)]
    results["checks"] = [{"check": c, "value": v, "pass": ok} for c, v, ok in checks]
    results["pass"] = all(ok for _, _, ok in checks)

    print("\n| check | value | pass |\n|---|---|---|")
    for c, v, ok in checks:
        print(f"| {c} | {v:.4g} | {'yes' if ok else 'NO'} |")
    for name, r in results["runs"].items():
        m = r["metrics"]
        print(f"\n{name}: wall {r['wall_seconds']} s (train {m['train_seconds']} s, {m['steps']} steps), "
              f"FID {m.get('fid', float('nan')):.3f}, KID {m.get('kid', float('nan')):.4f}, "
              f"diversity ratio {m.get('diversity_ratio', float('nan')):.3f}, "
              f"load avg before {r['loadavg_before']} after {r['loadavg_after']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
