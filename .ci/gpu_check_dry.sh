#!/usr/bin/env bash
# The GPU check's dry run (scripts/gpu_check.sh --dry-run): every step's command on the CPU at
# the smallest sizes, stubs where a GPU is needed; fails when an expected file is missing, the
# memcheck selection collects fewer than 20 tests or no float32 / channels_last case, or the
# step limits do not fit the budget. Runs inside a venv where ganx is installed (.ci/run: the
# test venv, after the README's test command).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
if ! GPU_CHECK_WORK="$tmp/work/gpu-check" bash scripts/gpu_check.sh --dry-run "$tmp/out" > "$tmp/console.log" 2>&1; then
  cat "$tmp/console.log"
  for f in "$tmp"/work/gpu-check/*.log; do echo "---- $f"; tail -n 30 "$f"; done
  echo "GPU check dry run FAILED after $(( $(date +%s) - t0 ))s"
  exit 1
fi
grep -E '^(==|   ->|   [a-z]|!!)' "$tmp/out/summary.txt" | grep -v '^   | ' || true
echo "GPU check dry run passed in $(( $(date +%s) - t0 ))s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
