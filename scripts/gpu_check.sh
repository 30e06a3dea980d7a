#!/usr/bin/env bash
# The GPU check: one command on a lent GPU machine (no internet; torch, nvcc, cmake, ninja,
# scikit-build-core preinstalled) that builds ganx, tests it and measures the issue's targets
# inside a fixed time budget. How to call it on the lent machine: scripts/gpu_run.md.
#
#   scripts/gpu_check.sh [OUT_DIR]             # the real check (default OUT_DIR: $OUT)
#   scripts/gpu_check.sh --dry-run OUT_DIR     # CPU: every step's command at the smallest sizes (CI)
#
# Steps, in order of value, each under its own time limit (seconds; the limits and the final
# packing add up to GPU_CHECK_BUDGET_S = 540). A step that fails or runs out of time is recorded
# (its partial log kept: pytest and the benchmarks stop on SIGINT and write what they have) and
# the next step still runs; a later step gets at most the time left in the budget, and the last
# one (memcheck) all of it.
#   env                   environment: commit, CPU model, nvidia-smi -q (clocks, power), pip freeze
#   build                 pip install -e . for the visible GPU's architecture only (GANX_CUDA=ON)
#   cuda-tests            the op-level `cuda` tests (not the benchmark smoke tests), junit XML
#   bench-upconv          bf16 upsample-conv, DCGAN-64 generator layers at batch 64 and 256:
#                         ganx / eager / cuDNN's folded conv_transpose2d, fwd and fwd+bwd
#   bench-dloss           D loss fwd+bwd at 64(+64), 4096 and 16M logits: ganx vs eager, % copy BW
#   bench-train           one DCGAN-64 training step (batch 64), fused vs eager (reference)
#   bench-upconv-compile  the same layers, fwd+bwd: ganx / eager / torch.compile
#   memcheck              compute-sanitizer memcheck over >= 20 small `cuda` tests (float32,
#                         channels_last, every algorithm, conv_transpose, BCE)
# Every benchmark reports device time (CUDA events; CUDA-graph replay) and wall and host time
# per call, and ganx's algorithm choices.
# Environment: GANX_COMMIT (the commit, for a tree without .git; else .ganx_commit, else git),
# GPU_CHECK_STEPS=a,b (only these steps: a rerun), GPU_CHECK_LIMITS=step=s,... (other limits),
# GPU_CHECK_BUDGET_S, GPU_CHECK_WORK (the work folder), PYTHON (default python3).
#
# Output: the files are written into a work folder (GPU_CHECK_WORK, default a fresh folder under
# ${TMPDIR:-/tmp}) and packed after every step into OUT_DIR/gpu_check.tar.gz (folder gpu-check/),
# next to OUT_DIR/summary.txt and OUT_DIR/gpu_check.log: three files, since the lent machine
# returns at most 8 files from $OUT. Exit status non-zero if any step failed.
#
# --dry-run runs on the CPU: the same scripts and options at the smallest sizes (--tiny, CPU,
# float32; torch.compile with the aot_eager backend: traced, no code generated), stub files
# where a GPU is truly needed (nvidia-smi, compute-sanitizer), no rebuild (pip's --dry-run of
# the same install; the installed ganx is used). It then checks that every
# expected file is in the archive, that the memcheck selection collects >= 20 tests with float32
# and channels_last cases, and that the step limits fit the budget; non-zero if anything misses.
# shellcheck disable=SC2317,SC2054  # steps run indirectly (--body NAME); commas inside option values
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD

BODY=   # internal: `gpu_check.sh --body NAME ...` runs the shell step NAME (under `timeout`)
if [ "${1:-}" = "--body" ]; then BODY=$2; shift 2; fi
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
case "${1:-}" in -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 && !/shellcheck/ {sub(/^# ?/, ""); print}' "$0"; exit 0 ;; esac
OUT_DIR=${1:-${OUT:-}}
if [ -z "$OUT_DIR" ]; then
  echo "gpu_check.sh: give OUT_DIR (or set OUT)" >&2; exit 2
fi
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd) || exit 2
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# ------------------------------------------------------------------ budget and step limits
BUDGET=${GPU_CHECK_BUDGET_S:-540}   # the whole script; the `run` call's timeout_s is 570 (gpu_run.md)
RUN_TIMEOUT_S=570                    # what gpu_run.md tells the caller to pass as timeout_s
FINISH_S=5                           # the final packing, reserved inside the budget
STEPS=(env build cuda-tests bench-upconv bench-dloss bench-train bench-upconv-compile memcheck)
# build: one .cu file with torch's headers took minutes on 2 loaded cores here; with 16 cores
# and one architecture the whole build is estimated at 2-2.5 min (never measured on the device).
# bench-upconv: 8 layers x 2 phases x 3 contenders, ~0.4 s of timing a row plus cuDNN's and
# ganx's algorithm search per layer (cudnn.benchmark on); batch 64 runs first.
declare -A LIMIT=([env]=15 [build]=210 [cuda-tests]=65 [bench-upconv]=90 [bench-dloss]=25
                  [bench-train]=35 [bench-upconv-compile]=40 [memcheck]=55)
# GPU_CHECK_LIMITS=name=s,...: other limits for some steps (the dry run checks the sum).
GPU_CHECK_LIMITS=${GPU_CHECK_LIMITS:-}
for kv in ${GPU_CHECK_LIMITS//,/ }; do
  [[ "$kv" =~ ^([a-z-]+)=([0-9]+)$ && -n "${LIMIT[${BASH_REMATCH[1]}]:-}" ]] \
    || { echo "gpu_check.sh: GPU_CHECK_LIMITS: cannot read '$kv' (step=seconds)" >&2; exit 2; }
  LIMIT[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
done
KILL_AFTER=10                        # SIGKILL this long after the SIGINT of a step's time limit
DRY_LIMIT_S=${GPU_CHECK_DRY_LIMIT_S:-300}
# GPU_CHECK_STEPS=a,b,...: run only these steps (a rerun on a warm machine); default: all.
ONLY=${GPU_CHECK_STEPS:-}

WORK=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")/gpu-check}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
export GPU_CHECK_WORK=$WORK
ARCHIVE="$OUT_DIR/gpu_check.tar.gz"
SUMMARY="$OUT_DIR/summary.txt"
LOG="$OUT_DIR/gpu_check.log"
if [ -z "$BODY" ]; then
  : > "$SUMMARY"
  exec > >(tee -a "$LOG") 2>&1
fi
T_START=$(date +%s)
status=0
say() { echo "$*" | tee -a "$SUMMARY"; }

pack() {  # the work folder into OUT_DIR/gpu_check.tar.gz (replaced whole, never half-written)
  cp "$SUMMARY" "$WORK/summary.txt" 2>/dev/null
  tar -czf "$OUT_DIR/.gpu_check.tar.gz.tmp" -C "$(dirname "$WORK")" "$(basename "$WORK")" \
    && mv -f "$OUT_DIR/.gpu_check.tar.gz.tmp" "$ARCHIVE"
}
STEP_PID=
on_signal() {
  [ -n "$STEP_PID" ] && kill -INT "$STEP_PID" 2>/dev/null && wait "$STEP_PID" 2>/dev/null
  say "== interrupted by a signal: packing what there is"; pack; exit 130
}
[ -z "$BODY" ] && trap on_signal INT TERM

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

step() {  # step NAME CMD...: run under min(LIMIT[NAME], time left), log to WORK/NAME.log, pack
  local name=$1; shift
  if ! wanted "$name"; then say "== $name: not selected (GPU_CHECK_STEPS=$ONLY)"; return 0; fi
  local limit=${LIMIT[$name]}
  local left=$(( BUDGET - FINISH_S - ($(date +%s) - T_START) ))
  if [ "$DRY" -eq 1 ]; then
    # The dry run checks commands and files, not speed: a slow CI machine gets DRY_LIMIT_S a step.
    if [ "$name" != timeout-selftest ]; then
      say "== $name: real limit ${limit}s; dry run: ${DRY_LIMIT_S}s"; limit=$DRY_LIMIT_S
    fi
  elif [ "$left" -lt 5 ]; then
    say "== $name: SKIPPED (budget of ${BUDGET}s spent)"; status=1; return 1
  elif [ "$limit" -gt "$left" ] || [ "$name" = "${STEPS[-1]}" ]; then
    limit=$left   # the budget's end; the last step (memcheck) also takes what earlier steps left over
  fi
  local t0
  t0=$(date +%s)
  say "== $name (limit ${limit}s): $*"
  # In the background, so that a signal to this script is handled at once (on_signal).
  timeout --signal=INT --kill-after=$KILL_AFTER "$limit" "$@" >> "$WORK/$name.log" 2>&1 &
  STEP_PID=$!
  wait "$STEP_PID"
  local rc=$?
  STEP_PID=
  [ $rc -eq 124 ] && say "   TIMED OUT after ${limit}s (SIGINT; partial log and results kept)"
  [ $rc -eq 137 ] && say "   KILLED ${KILL_AFTER}s after the SIGINT of its ${limit}s limit"
  say "   -> rc=$rc in $(( $(date +%s) - t0 ))s"
  tail -n 3 "$WORK/$name.log" | cut -c1-200 | sed 's/^/   | /' | tee -a "$SUMMARY"
  [ $rc -eq 0 ] || status=1
  pack
  return $rc
}

# ------------------------------------------------------------------ the commit
# A tree copied without .git (the lent machine) gets its commit from GANX_COMMIT or .ganx_commit.
if [ -z "${GANX_COMMIT:-}" ]; then
  if git -C "$ROOT" rev-parse HEAD >/dev/null 2>&1; then
    GANX_COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo +dirty)
  elif [ -s "$ROOT/.ganx_commit" ]; then
    GANX_COMMIT="$(head -n 1 "$ROOT/.ganx_commit" | tr -d '[:space:]') (from .ganx_commit)"
  else
    GANX_COMMIT="unknown (no .git, no GANX_COMMIT, no .ganx_commit)"
  fi
fi
export GANX_COMMIT

# ------------------------------------------------------------------ the commands
if [ "$DRY" -eq 1 ]; then
  MODE="dry run (CPU, smallest sizes)"
  DEV=(--device cpu); LOWP=(--dtype float32); TINY=(--tiny)
  UPCONV_SHAPES=(); DLOSS_SIZES=(--sizes 64,256); TRAIN_CFG=(); COMPILE=(--compile-backend aot_eager)
  export CUDA_VISIBLE_DEVICES=""
else
  MODE="real (GPU)"
  DEV=(--device cuda); LOWP=(--dtype bfloat16); TINY=(--min-time 0.05)
  UPCONV_SHAPES=(--shapes dcgan64-); DLOSS_SIZES=(--sizes 64,4096,16777216); TRAIN_CFG=(--configs 64px-n64-fp32)
  COMPILE=()
fi
BENCH_OUT=(--out "$WORK" --no-plot)
# The op-level `cuda` tests: every test marked `cuda` (new files included) except the benchmark
# smoke tests (tests/test_bench*.py: test_tiny_on_cuda runs three benchmark subprocesses).
CUDA_TESTS=(tests --ignore-glob='tests/test_bench*.py')  # made absolute by pytest (cwd: the repo)
# The memcheck selection, 24 small cases of every CUDA path (test ids look like
# test_cuda_shapes_and_formats_float32[channels_last-shape1]): fp64 scale 2 / 3x3 with each
# activation, float32 contiguous / channels_last / sliced at two shapes, each algorithm
# (no_sync), autocast, empty input, graph capture, conv_transpose2d_4s2, the BCE kernels.
MEMCHECK_FILES=(tests/test_upsample_conv.py tests/test_upconv_composition.py tests/test_conv_transpose.py
                tests/test_bce_loss.py)
MEMCHECK_K="(test_cuda_matches_cpu_and_reference_fp64 and 2-3]) or (test_cuda_shapes_and_formats_float32 and (shape1 or shape2)) or test_cuda_no_sync or test_cuda_matches_torch or test_cuda_autocast_every_op or (test_cuda_matches_cpu_and_reference and not fp64) or test_cuda_errors_and_empty or test_cuda_graph_capture_generator_and_d_loss"
PYTEST=("$PY" -m pytest -p no:cacheprovider -o faulthandler_timeout=60)

SANITIZER=$(command -v compute-sanitizer || { [ -x /usr/local/cuda/bin/compute-sanitizer ] && echo /usr/local/cuda/bin/compute-sanitizer; } || true)
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=$PATH:/usr/local/cuda/bin; fi

# ------------------------------------------------------------------ step bodies
env_step() {
  "$PY" -m pip freeze > "$WORK/pip-freeze.txt" 2>&1 &
  local freeze=$!
  # The header that scripts/gpu_results.py puts on every file it commits to benchmarks/results.
  GPU_CHECK_MODE=$MODE "$PY" - > "$WORK/environment.json" <<'PYEOF'
import datetime, json, os, platform, subprocess, torch
def smi(q):
    try:
        r = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip().splitlines()[0] if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None
cuda = torch.cuda.is_available()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(json.dumps({
    "mode": os.environ["GPU_CHECK_MODE"],
    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "commit": os.environ.get("GANX_COMMIT"),
    "device": torch.cuda.get_device_name(0) if cuda else f"CPU only: {cpu}",
    "compute_capability": "%d.%d" % torch.cuda.get_device_capability(0) if cuda else None,
    "driver": smi("driver_version") if cuda else None,
    "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
    "torch": torch.__version__, "python": platform.python_version(), "cpu": cpu, "cpus": os.cpu_count(),
}, indent=1))
PYEOF
  {
    echo "mode: $MODE"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $GANX_COMMIT"
    echo "host: $(uname -a)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) CPUs)"
    echo "python: $("$PY" -VV 2>&1 | head -n 1)"
    "$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); print('torch', d['torch'], '| CUDA', d['cuda_runtime'], '| cuDNN', d['cudnn'], '| device', d['device'], '| driver', d['driver'])" "$WORK/environment.json"
    echo "nvcc: $(nvcc --version 2>/dev/null | tail -n 2 | tr '\n' ' ' || echo n/a)"
    echo "compute-sanitizer: ${SANITIZER:-not found}"
    echo "TORCH_CUDA_ARCH_LIST (build): ${TORCH_CUDA_ARCH_LIST:-}"
    echo "step limits (s): $(for s in "${STEPS[@]}"; do printf '%s=%s ' "$s" "${LIMIT[$s]}"; done)+ finish=$FINISH_S; budget $BUDGET"
  } > "$WORK/environment.txt" 2>&1
  grep -m1 -A0 'model name' /proc/cpuinfo > "$WORK/cpu.txt"; lscpu >> "$WORK/cpu.txt" 2>/dev/null
  if [ "$DRY" -eq 1 ]; then
    echo "DRY RUN: nvidia-smi needs a GPU; not run" > "$WORK/nvidia-smi.txt"
    echo "DRY RUN: nvidia-smi needs a GPU; not run" > "$WORK/nvidia-smi-q-start.txt"
  else
    { nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,pstate,temperature.gpu --format=csv; } > "$WORK/nvidia-smi.txt" 2>&1
    nvidia-smi -q -d CLOCK,POWER,PERFORMANCE,TEMPERATURE > "$WORK/nvidia-smi-q-start.txt" 2>&1
  fi
  wait "$freeze"
  cat "$WORK/environment.txt"
  head -n 12 "$WORK/nvidia-smi.txt"
}

build_step() {
  if [ "$DRY" -eq 1 ]; then
    # The same install, resolved but not built (pip --dry-run); the installed ganx is used.
    GANX_CUDA=OFF "$PY" -m pip install --no-build-isolation --no-deps --dry-run -e . || return 1
    echo "DRY RUN: not rebuilt; using the installed ganx"
  else
    "$PY" -m pip install --no-build-isolation --no-deps -v -e . || return 1
  fi
  "$PY" -m ganx info > "$WORK/ganx-info.txt" 2>&1 || return 1
  cat "$WORK/ganx-info.txt"
  # The real check needs the CUDA kernels: a build without them is a failed build.
  [ "$DRY" -eq 1 ] || "$PY" -c "import ganx._ext as e, sys; print('CUDA_BUILT', e.CUDA_BUILT, e.CUDA_ARCHS); sys.exit(0 if e.CUDA_BUILT else 1)"
}

memcheck_step() {
  # First: the selection must really select (>= 20 tests, float32 and channels_last among them).
  "${PYTEST[@]}" --collect-only -q -m cuda -k "$MEMCHECK_K" "${MEMCHECK_FILES[@]}" > "$WORK/memcheck-selection.txt" 2>&1
  local n
  n=$(grep -c '::' "$WORK/memcheck-selection.txt")
  echo "memcheck selection: $n tests ($(grep -c 'float32' "$WORK/memcheck-selection.txt") float32, $(grep -c 'channels_last' "$WORK/memcheck-selection.txt") channels_last ids)"
  if [ "$n" -lt 20 ] || ! grep -q 'float32' "$WORK/memcheck-selection.txt" || ! grep -q 'channels_last' "$WORK/memcheck-selection.txt"; then
    echo "memcheck selection too small or missing float32/channels_last cases"; return 3
  fi
  if [ "$DRY" -eq 1 ]; then
    echo "DRY RUN: compute-sanitizer needs a GPU; the selection above was only collected"
    echo '<?xml version="1.0"?><!-- DRY RUN: compute-sanitizer needs a GPU; not run --><testsuites/>' > "$WORK/memcheck.xml"
    return 0
  fi
  [ -n "$SANITIZER" ] || { echo "compute-sanitizer not found"; return 4; }
  "$SANITIZER" --version | tail -n 1
  "$SANITIZER" --tool memcheck --error-exitcode 9 --print-limit 200 --target-processes all \
    "${PYTEST[@]}" -v -m cuda --continue-on-collection-errors -k "$MEMCHECK_K" --junitxml="$WORK/memcheck.xml" "${MEMCHECK_FILES[@]}"
}

headline() {  # the numbers the issue asks for, from the benchmarks' JSON (the end of the console)
  "$PY" - "$WORK" <<'PYEOF'
import glob, json, math, os, sys
work = sys.argv[1]
def load(pattern):
    files = sorted(glob.glob(os.path.join(work, pattern)))
    return json.load(open(files[-1])) if files else None
def x(v):
    return "-" if v is None or not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.2f}x"
clocks = (("median_s", "events"), ("graph_median_s", "graph"), ("wall_per_call_s", "wall"), ("host_per_call_s", "host"))
ups = sorted(glob.glob(os.path.join(work, "upsample_conv-*.json")))
for tag, files in (("", [f for f in ups if "-compile-" not in f]), ("compile", [f for f in ups if "-compile-" in f])):
    d = json.load(open(files[-1])) if files else None
    if d is None:
        print(f"upsample_conv{' ' + tag if tag else ''}: no result"); continue
    gm = d.get("summary", {}).get("geomean_speedup_by_batch", {})
    for key, g in gm.items():
        if "fwd+bwd" in key:
            print(f"upsample_conv{' (' + tag + ' run)' if tag else ''} {key} ({g.get('shapes')} layers): ganx speed-up "
                  + ", ".join(f"{name} {x(g.get(f))}" for f, name in clocks))
    if d.get("interrupted"):
        print("  (interrupted: partial)")
d = load("losses-*.json")
if d:
    for r in d["results"]:
        if r["contender"] == "ganx":
            print(f"D loss n={r['n']}+{r['n']} {r['phase']}: ganx {r['median_s'] * 1e6:.1f} us; vs eager "
                  f"events {x(r['speedup_vs'].get('eager'))}, graph {x((r.get('device_speedup_vs') or {}).get('eager'))}; "
                  f"{r['pct_copy_bw']:.0f}% of copy BW (events), "
                  + (f"{r['device_pct_copy_bw']:.0f}% (graph)" if r.get("device_pct_copy_bw") else "- (graph)"))
d = load("train_step-*.json")
if d:
    for r in d["results"]:
        if r["contender"] == "fused":
            print(f"train step {r['config']}: fused {r['median_s'] * 1e3:.2f} ms ({r['images_per_s']:.0f} img/s), "
                  f"vs reference {x(r['speedup_vs'].get('reference'))}; wall {r['wall_per_call_s'] * 1e3:.2f} ms, "
                  f"host {r['host_per_call_s'] * 1e3:.2f} ms")
PYEOF
  local f
  for f in cuda-tests memcheck; do
    [ -f "$WORK/$f.log" ] && echo "$f: $(grep -E '(passed|failed|skipped|error).* in [0-9.]+s' "$WORK/$f.log" | tail -n 1 | tr -d '=' | sed 's/^ *//')"
  done
  [ -f "$WORK/memcheck.log" ] && echo "compute-sanitizer: $(grep -E 'ERROR SUMMARY' "$WORK/memcheck.log" | tail -n 1 || echo none)"
  return 0
}

finish_files() {  # nvidia-smi after the load, the algorithm choices of every benchmark
  if [ "$DRY" -eq 1 ]; then
    echo "DRY RUN: nvidia-smi needs a GPU; not run" > "$WORK/nvidia-smi-q-end.txt"
  else
    timeout 5 nvidia-smi -q -d CLOCK,POWER,PERFORMANCE,TEMPERATURE > "$WORK/nvidia-smi-q-end.txt" 2>&1
  fi
  timeout 5 "$PY" - "$WORK" > "$WORK/algorithm-choices.txt" 2>&1 <<'PYEOF'
import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    d = json.loads(p.read_text())
    ch = d.get("upconv_algorithm_choices") or []
    print(f"{p.name}: {len(ch)} choices")
    for c in ch:
        print(f"  {c.get('algorithm'):8s} {c.get('source'):6s} {c.get('key')}")
PYEOF
}

# A shell step runs as `gpu_check.sh --body NAME`: `timeout` needs a program, not a function.
SELF=("$ROOT/scripts/gpu_check.sh" --body)
DRYFLAG=(); [ "$DRY" -eq 1 ] && DRYFLAG=(--dry-run)
if [ -n "$BODY" ]; then
  "${BODY}_step"
  exit $?
fi

# ------------------------------------------------------------------ run
say "== gpu_check.sh: $MODE; commit $GANX_COMMIT; budget ${BUDGET}s; work folder $WORK; archive $ARCHIVE"

if [ "$DRY" -eq 0 ] && [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  # Only the visible GPU's architecture: one SASS target keeps the build at its shortest.
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print(';'.join(sorted({'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))" 2>/dev/null)
  [ -n "$TORCH_CUDA_ARCH_LIST" ] || { say "!! no GPU visible to torch: building for 9.0"; TORCH_CUDA_ARCH_LIST=9.0; }
fi
[ "$DRY" -eq 0 ] && export TORCH_CUDA_ARCH_LIST GANX_CUDA=ON
export MAX_JOBS=${MAX_JOBS:-$(nproc)} CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}

step env bash "${SELF[@]}" env "${DRYFLAG[@]}" "$OUT_DIR"
step build bash "${SELF[@]}" build "${DRYFLAG[@]}" "$OUT_DIR"
build_ok=$?
if [ $build_ok -ne 0 ] && wanted build; then
  say "!! build failed: the steps that import ganx will fail too (see build.log); they still run"
fi
step cuda-tests "${PYTEST[@]}" -v -rs -m cuda --continue-on-collection-errors --junitxml="$WORK/cuda-tests.xml" "${CUDA_TESTS[@]}"
step bench-upconv "$PY" benchmarks/bench_upsample_conv.py "${DEV[@]}" "${LOWP[@]}" "${TINY[@]}" "${UPCONV_SHAPES[@]}" \
  --contenders ganx,eager,convT-folded --phases fwd,fwd+bwd "${BENCH_OUT[@]}"
step bench-dloss "$PY" benchmarks/bench_losses.py "${DEV[@]}" "${TINY[@]}" "${DLOSS_SIZES[@]}" \
  --losses discriminator --contenders ganx,eager --phases fwd+bwd "${BENCH_OUT[@]}"
step bench-train "$PY" benchmarks/bench_train_step.py "${DEV[@]}" "${TINY[@]}" "${TRAIN_CFG[@]}" \
  --precisions fp32 --contenders fused,reference "${BENCH_OUT[@]}"
step bench-upconv-compile "$PY" benchmarks/bench_upsample_conv.py "${DEV[@]}" "${LOWP[@]}" "${TINY[@]}" "${UPCONV_SHAPES[@]}" \
  --contenders ganx,eager,compile "${COMPILE[@]}" --phases fwd+bwd --tag compile "${BENCH_OUT[@]}"
step memcheck bash "${SELF[@]}" memcheck "${DRYFLAG[@]}" "$OUT_DIR"

if [ "$DRY" -eq 1 ]; then
  # The time-limit path itself: a step past its limit gets SIGINT, keeps its partial output, and
  # the script goes on (the real steps' limits are not hit on the CPU).
  LIMIT[timeout-selftest]=2; saved=$status
  step timeout-selftest "$PY" -c "
import time
print('started', flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print('KeyboardInterrupt: partial results written', flush=True)
    raise SystemExit(130)"
  st=$?; status=$saved
  if [ $st -eq 124 ] && grep -q 'partial results written' "$WORK/timeout-selftest.log"; then
    say "   timeout self-test: SIGINT at the limit, partial output kept, rc 124"
  else
    say "!! timeout self-test: rc $st (want 124) or no partial output"; status=1
  fi
fi

finish_files
say "== results"
headline 2>&1 | tee -a "$SUMMARY"
pack

# ------------------------------------------------------------------ checks (both modes)
# Every expected file in the archive, every benchmark row with its clocks; in the dry run also
# the step limits against the budget and the run timeout that gpu_run.md gives.
say "== checks"
if [ "$DRY" -eq 1 ]; then BENCH_RE='cpu-[0-9]+core-tiny'; else BENCH_RE='cuda-.+'; fi
SELECTED=(); for s in "${STEPS[@]}"; do wanted "$s" && SELECTED+=("$s"); done
"$PY" - "$ARCHIVE" "$WORK" "$BENCH_RE" "${SELECTED[@]}" <<'PYEOF' | tee -a "$SUMMARY" || status=1
import json, re, sys, tarfile
archive, work, bench_re, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
names = {m.name.split("/", 1)[1] for m in tarfile.open(archive).getmembers() if "/" in m.name}
bad = []
per_step = {"env": ["environment.txt", "environment.json", "pip-freeze.txt", "cpu.txt", "nvidia-smi.txt",
                    "nvidia-smi-q-start.txt"],
            "build": ["ganx-info.txt"], "cuda-tests": ["cuda-tests.xml"],
            "memcheck": ["memcheck-selection.txt", "memcheck.xml"]}
expect = ["nvidia-smi-q-end.txt", "algorithm-choices.txt", "summary.txt"]
expect += [f for s in steps for f in per_step.get(s, []) + [f"{s}.log"]]
bad += [f"missing from the archive: {f}" for f in expect if f not in names]
stems = {"bench-upconv": rf"upsample_conv-{bench_re}-\d{{4}}-\d\d-\d\d",
         "bench-dloss": rf"losses-{bench_re}-\d{{4}}-\d\d-\d\d",
         "bench-train": rf"train_step-{bench_re}-\d{{4}}-\d\d-\d\d",
         "bench-upconv-compile": rf"upsample_conv-{bench_re}-compile-\d{{4}}-\d\d-\d\d"}
for step, stem in stems.items():
    if step not in steps:
        continue
    for ext in ("json", "md"):
        found = [n for n in names if re.fullmatch(stem + r"\." + ext, n)]
        if len(found) != 1:
            bad.append(f"{step}: expected one {stem}.{ext} in the archive, found {found}")
            continue
        if ext == "json":
            d = json.load(tarfile.open(archive).extractfile("gpu-check/" + found[0]))
            if not d.get("results"):
                bad.append(f"{found[0]}: no result rows")
            if d.get("interrupted"):
                bad.append(f"{found[0]}: interrupted ({d['interrupted']}): partial rows")
            for r in d.get("results", []):
                for k in ("median_s", "wall_per_call_s", "host_per_call_s"):
                    if not isinstance(r.get(k), float) or not r[k] > 0:
                        bad.append(f"{found[0]}: a {r.get('contender')} row lacks {k}")
                        break
            if str(d["env"].get("ganx_commit", "unknown")).startswith("unknown"):
                bad.append(f"{found[0]}: no commit recorded")
cuda = tarfile.open(archive).extractfile("gpu-check/cuda-tests.xml") if "cuda-tests.xml" in names else None
xml = cuda.read().decode() if cuda else ""
cases = xml.count("<testcase")
if not cases and "cuda-tests" in steps:
    bad.append("cuda-tests.xml holds no test case")
if "test_benchmarks" in xml:
    bad.append("the cuda-tests step ran the benchmark smoke tests")
for b in bad:
    print("!!", b)
print(f"   {len(names)} files in the archive; cuda-tests.xml: {cases} test cases; "
      + ("all expected files and rows present" if not bad else f"{len(bad)} problem(s)"))
sys.exit(1 if bad else 0)
PYEOF
if [ "$DRY" -eq 1 ]; then
  sum=$FINISH_S; for s in "${STEPS[@]}"; do sum=$(( sum + LIMIT[$s] )); done
  if [ "$sum" -ne "$BUDGET" ]; then say "!! step limits + finish = ${sum}s, not the budget ${BUDGET}s"; status=1
  else say "   step limits + finish = ${sum}s = the budget"; fi
  if [ $(( BUDGET + KILL_AFTER + 10 )) -gt "$RUN_TIMEOUT_S" ]; then
    say "!! budget ${BUDGET}s + ${KILL_AFTER}s kill grace leaves under 10s to the run timeout ${RUN_TIMEOUT_S}s"; status=1
  fi
  if ! grep -q "\"timeout_s\": $RUN_TIMEOUT_S" scripts/gpu_run.md 2>/dev/null; then
    say "!! scripts/gpu_run.md does not give \"timeout_s\": $RUN_TIMEOUT_S"; status=1
  fi
  sel=$(grep -c '::' "$WORK/memcheck-selection.txt" 2>/dev/null)
  say "   memcheck selection: ${sel:-0} tests collected"
  # What a session does with the archive afterwards (gpu_run.md), into a scratch folder.
  if "$PY" scripts/gpu_results.py "$ARCHIVE" --dest "$(dirname "$WORK")/results" > "$WORK/../gpu_results.out" 2>&1; then
    say "   scripts/gpu_results.py unpacked the archive: $(head -n 1 "$WORK/../gpu_results.out")"
  else
    say "!! scripts/gpu_results.py failed:"; sed 's/^/   | /' "$WORK/../gpu_results.out" | tee -a "$SUMMARY"; status=1
  fi
fi

say "== overall status: $status in $(( $(date +%s) - T_START ))s ($MODE)"
pack
exit $status
