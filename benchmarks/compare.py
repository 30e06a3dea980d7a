#!/usr/bin/env python
"""Compare two result JSONs of the same benchmark (e.g. before/after a kernel change).

    python benchmarks/compare.py results/upsample_conv-cpu-2core-2026-11-24.json NEW.json
    python benchmarks/compare.py OLD.json NEW.json --field graph_median_s   # CUDA-graph times

Prints a Markdown table: every row present in both, its old and new time and the speed-up
(> 1: NEW is faster). Each bench script also takes ``--compare OLD.json`` directly.
"""
import argparse
import sys
from pathlib import Path

from ganx_bench.harness import COMPARE_KEYS, compare_md, load_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", type=Path, help="earlier result JSON")
    p.add_argument("new", type=Path, help="later result JSON of the same benchmark")
    p.add_argument("--field", default="median_s", help="time field to compare (default median_s)")
    args = p.parse_args(argv)
    old, new = load_json(args.old), load_json(args.new)
    bench = new.get("benchmark")
    if bench != old.get("benchmark") or bench not in COMPARE_KEYS:
        print(f"compare.py: {args.old} is {old.get('benchmark')!r} and {args.new} is {bench!r}: "
              "need two results of the same benchmark", file=sys.stderr)
        return 2
    ne = new.get("env", {})
    print(f"Now: {new.get('stem')} ({ne.get('device')}, ganx @ {ne.get('ganx_commit')})\n")
    print(compare_md(new["results"], old, COMPARE_KEYS[bench], value=args.field))
    return 0


if __name__ == "__main__":
    sys.exit(main())
