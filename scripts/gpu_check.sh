#!/usr/bin/env bash
# GPU verification that fits ONE 10-minute command on a lent GPU machine (no internet; torch,
# nvcc, cmake, ninja, scikit-build-core preinstalled; ganx's Python deps installed).
#
#   scripts/gpu_check.sh [OUT_DIR]        # default OUT_DIR: benchmarks/results/gpu-check-<date>
#
# Steps (each under its own time limit, all under a total deadline of GPU_CHECK_BUDGET_S,
# default 560 s; a step that fails or runs out of time is recorded and the next one still runs):
#   1. build ganx in place for the visible GPU's architecture only (GANX_CUDA=ON)      ~120-200 s
#   2. the `cuda` tests (pytest -m cuda)                                                 ~60-120 s
#   3. compute-sanitizer memcheck over a small subset of them (the glue kernels,
#      every algorithm, the BCE kernels)                                                 ~60-90 s
#   4. the benchmarks' quick sets (upsample-conv DCGAN-64 shapes fp32 + bf16, losses at
#      64 / 64K / 16M logits, one train step), written to benchmarks/results           ~90-150 s
# Estimates from the CPU side: the CUDA build of this tree on 2 loaded cores took ~8 min for
# csrc/cuda/upsample_conv2d.cu + bce_loss.cu; with 16 cores and one architecture the
# parallel build is about 2 min. environment.txt records device, driver, CUDA, cuDNN, torch,
# ganx commit and date; summary.txt each step's status and time. Exit status non-zero if any
# step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results/gpu-check-$(date -u +%Y-%m-%d)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
BUDGET=${GPU_CHECK_BUDGET_S:-560}
T_START=$(date +%s)
status=0
summary="$OUT/summary.txt"
: > "$summary"

step() {  # step NAME LIMIT_S CMD...: run with min(LIMIT_S, time left), log to OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local left=$(( BUDGET - ($(date +%s) - T_START) ))
  if [ "$left" -lt 15 ]; then
    echo "== $name: skipped (total budget of ${BUDGET}s spent)" | tee -a "$summary"; status=1; return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*" | tee -a "$summary"
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "   TIMED OUT after ${limit}s" | tee -a "$summary"
  echo "   -> rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$summary"
  tail -n 4 "$OUT/$name.log" | sed 's/^/   | /' | tee -a "$summary"
  [ $rc -eq 0 ] || status=1
  return $rc
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo +dirty)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null || echo "nvidia-smi: n/a"
  nvcc --version 2>/dev/null | tail -n 1
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
  command -v compute-sanitizer >/dev/null && compute-sanitizer --version | tail -n 1
} > "$OUT/environment.txt" 2>&1
tee -a "$summary" < "$OUT/environment.txt"

# Only the visible GPU's architecture: one SASS target keeps the build at its shortest.
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  TORCH_CUDA_ARCH_LIST=$($PY -c "import torch; print(';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))")
fi
export TORCH_CUDA_ARCH_LIST GANX_CUDA=ON
export MAX_JOBS=${MAX_JOBS:-$(nproc)} CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

step build 300 $PY -m pip install --no-build-isolation --no-deps -e . || { echo "build failed: see $OUT/build.log" | tee -a "$summary"; exit 1; }
step info 30 $PY -m ganx info
step cuda-tests 150 $PY -m pytest -q -rs -m cuda -p no:cacheprovider --junitxml="$OUT/cuda-tests.xml" tests

if command -v compute-sanitizer >/dev/null 2>&1; then
  step memcheck 100 compute-sanitizer --tool memcheck --error-exitcode 9 --target-processes all \
    $PY -m pytest -q -x -m cuda -p no:cacheprovider \
    -k "cuda_no_sync or cuda_shapes_and_formats_float32 and (contiguous or channels_last) and 3-17 or cuda_matches_torch or cuda_autocast_every_op or cuda_matches_cpu_and_reference" \
    tests/test_upconv_composition.py tests/test_upsample_conv.py tests/test_conv_transpose.py tests/test_bce_loss.py
else
  echo "compute-sanitizer not found: memcheck skipped" | tee -a "$summary"; status=1
fi

RES=benchmarks/results
step bench-upconv-fp32 90 $PY benchmarks/bench_upsample_conv.py --device cuda --out "$RES" --shapes dcgan64 \
  --contenders ganx,eager,convT-folded --min-time 0.05 --no-plot
step bench-upconv-bf16 90 $PY benchmarks/bench_upsample_conv.py --device cuda --dtype bfloat16 --out "$RES" \
  --shapes dcgan64 --contenders ganx,eager,convT-folded --min-time 0.05 --no-plot
step bench-losses 60 $PY benchmarks/bench_losses.py --device cuda --out "$RES" --sizes 64,65536,16777216 \
  --contenders ganx,eager --min-time 0.05 --no-plot
step bench-train-step 60 $PY benchmarks/bench_train_step.py --device cuda --out "$RES" --configs 64px-n64 \
  --contenders fused,reference --min-time 0.1 --no-plot

echo "== overall status: $status in $(( $(date +%s) - T_START ))s" | tee -a "$summary"
exit $status
