#!/usr/bin/env bash
# GPU verification for a machine with an NVIDIA GPU and no internet access, where torch,
# nvcc, cmake, ninja, scikit-build-core and pybind11 are preinstalled.
#
#   scripts/gpu_check.sh OUT_DIR [--quick]
#
# 1. builds ganx in place (--no-build-isolation, GANX_CUDA=ON, architectures of the visible GPU)
# 2. runs the whole test suite, CUDA tests included
# 3. runs compute-sanitizer memcheck (and racecheck on the forward/backward kernels) over the
#    CUDA op tests
# 4. runs the benchmarks (GPU), writing their tables, JSON and plots into OUT_DIR
# Every step logs into OUT_DIR; a step that fails is recorded and the next one still runs.
# The exit status is non-zero if any step failed. Summary: OUT_DIR/summary.txt.
set -uo pipefail
OUT=${1:?usage: scripts/gpu_check.sh OUT_DIR [--quick]}
QUICK=${2:-}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
summary="$OUT/summary.txt"
: > "$summary"

step() {  # step NAME CMD...: run, log to OUT/NAME.log, record the outcome
  local name=$1; shift
  local t0=$(date +%s)
  echo "== $name: $*" | tee -a "$summary"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   -> rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$summary"
  tail -n 5 "$OUT/$name.log" | sed 's/^/   | /' | tee -a "$summary"
  [ $rc -eq 0 ] || status=1
  return $rc
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: n/a"
  nvcc --version 2>/dev/null | tail -n 1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt" | tee -a "$summary"

if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; print(';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))")
fi
export TORCH_CUDA_ARCH_LIST GANX_CUDA=ON
export MAX_JOBS=${MAX_JOBS:-$(nproc)} CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

step build $PY -m pip install -v --no-build-isolation --no-deps -e . || { echo "build failed: see $OUT/build.log"; exit 1; }
step info $PY -m ganx info
step tests $PY -m pytest -q -rs --junitxml="$OUT/tests.xml" tests

OP_TESTS=$(ls tests/test_upsample_conv.py tests/test_bce_loss.py 2>/dev/null)
if command -v compute-sanitizer >/dev/null 2>&1; then
  # memcheck over every CUDA op test; racecheck (shared-memory hazards) over a few of them.
  step memcheck compute-sanitizer --tool memcheck --error-exitcode 9 --target-processes all \
    $PY -m pytest -q -x -m cuda -p no:cacheprovider $OP_TESTS
  step racecheck compute-sanitizer --tool racecheck --error-exitcode 9 --target-processes all \
    $PY -m pytest -q -x -m cuda -p no:cacheprovider -k "matches_cpu_and_reference_fp64 and 2-3" $OP_TESTS
else
  echo "compute-sanitizer not found: memcheck skipped" | tee -a "$summary"; status=1
fi

BENCH_ARGS="--device cuda --out $OUT"
[ "$QUICK" = "--quick" ] && BENCH_ARGS="$BENCH_ARGS --tiny"
for b in bench_upsample_conv bench_losses bench_train_step; do
  if [ -f "benchmarks/$b.py" ]; then
    step "$b" $PY "benchmarks/$b.py" $BENCH_ARGS
  fi
done

echo "== overall status: $status" | tee -a "$summary"
exit $status
