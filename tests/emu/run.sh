#!/usr/bin/env bash
# Builds the three emulator variants of every CUDA kernel (plain, asan+ubsan, race) and runs the
# emulated-kernel tests: every kernel vs the CPU kernels, the planted bugs. Needs ganx installed
# in the active Python (the CPU kernels are the reference) and g++. Prints the time it took.
# Usage: tests/emu/run.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS=0
python - <<'PY'
import sys, time
sys.path.insert(0, "tests/emu")
import harness
t = time.perf_counter()
harness.build_all()
print(f"emu: {', '.join(harness.VARIANTS)} builds ready in {time.perf_counter() - t:.1f} s", flush=True)
PY
python -m pytest -q -p no:cacheprovider tests/test_emu_*.py "$@"  # every emulated kernel's tests
echo "emu: tests/emu/run.sh took ${SECONDS} s"
