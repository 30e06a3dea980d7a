#!/usr/bin/env bash
# The torch range that pyproject.toml declares, built and tested: the declared floor, 2.11.0 and
# the newest release tested (2.15.0), each in its own fresh venv from the registry (the machine's
# local cap on torch is lifted with PIP_CONSTRAINT=/dev/null for these installs only).
#  - a CUDA 13 torch (like the machine's nvcc 13.0): CUDA kernels compiled for sm_90 only
#    (GANX_CUDA=ON, TORCH_CUDA_ARCH_LIST=9.0), then the op tests on the CPU (no GPU here);
#  - any other torch (the floor's wheels are CUDA 12): the default (AUTO) build must build the
#    CPU kernels only and say why in one line; then the op tests.
#  - VERSION:compile (2.11.0 by default, to keep CI's time): configure and compile the CUDA
#    sources only (no link, no op tests); the 2.13.0 CPU-only job in .ci/run and the two other
#    versions here run the op tests.
#  - across versions: the ganx built against the floor, imported under each later torch, must
#    fail with ganx's ImportError that says how to rebuild (not crash, not load).
# Each venv is deleted after its job (a CUDA torch is ~4-5 GB installed).
# Usage: bash .ci/torch_matrix.sh [VERSION[:compile]...]   (default: FLOOR 2.11.0:compile 2.15.0)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
start=$(date +%s)
stamp() { echo "== [torch matrix $(( $(date +%s) - start ))s, load $(cut -d' ' -f1-3 /proc/loadavg)] $*"; }

# The floor is read from pyproject.toml, so the declared range and the tested one cannot drift.
FLOOR=$("$PY" - <<'PYEOF'
import re
text = open("pyproject.toml").read()
deps = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
m = re.search(r'"torch>=([0-9.]+)', deps)
assert m, "pyproject.toml's dependencies declare no torch>= floor"
print(m.group(1))
PYEOF
)
if [[ $# -gt 0 ]]; then VERSIONS=("$@"); else VERSIONS=("$FLOOR" 2.11.0:compile 2.15.0); fi
OP_TESTS=(tests/test_upsample_conv.py tests/test_conv_transpose.py tests/test_bce_loss.py)
export PIP_DISABLE_PIP_VERSION_CHECK=1 MAX_JOBS=${MAX_JOBS:-2} CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
unset GANX_CUDA TORCH_CUDA_ARCH_LIST CUDACXX CUDA_HOME CUDA_PATH || true

SAVED=$(mktemp -d)      # the first ganx built here (the floor's), for the import checks
trap 'rm -rf "$SAVED" .ci-venv-torch build' EXIT
for spec in "${VERSIONS[@]}"; do
  v=${spec%%:*}
  mode=full
  [[ $spec == *:compile ]] && mode=compile
  venv=.ci-venv-torch
  rm -rf "$venv" build
  "$PY" -m venv "$venv"
  (
    source "$venv/bin/activate"
    # Lift the machine's cap for every install of this job: under it, ganx's own install would
    # "fix" a torch above the cap by replacing it.
    export PIP_CONSTRAINT=/dev/null
    stamp "torch $v: install (fresh venv)"
    # The floor was proved with numpy 1.26 (numpy<2 then); later versions take the newest numpy.
    numpy=numpy
    [[ $v == "$FLOOR" ]] && numpy="numpy<2"
    pip install -q "torch==$v" cmake ninja scikit-build-core "$numpy" pytest hypothesis expecttest
    cuda=$(python -c "import torch; print(torch.version.cuda or 'none')")
    if [[ -f $SAVED/ganx/__init__.py ]]; then
      built=$(cat "$SAVED/torch_version")
      stamp "torch $v: the ganx built against torch $built must refuse to import, saying how to rebuild"
      set +e
      out=$(cd "$SAVED" && PYTHONPATH="$SAVED" python -c "import ganx" 2>&1)
      rc=$?
      set -e
      echo "$out" | tail -n 6
      if [[ $rc -ne 1 ]] || ! grep -q "ImportError: ganx: " <<<"$out" || ! grep -q "Rebuild ganx against the torch you run" <<<"$out"; then
        echo "import of a ganx built against torch $built under torch $v: exit $rc, without ganx's rebuild message"; exit 1
      fi
    fi
    log=$(mktemp)
    if [[ $mode == compile ]]; then
      [[ $cuda == 13.* ]] || { echo "torch $v:compile: only a CUDA 13 torch has CUDA sources to compile here (CUDA $cuda)"; exit 1; }
      stamp "torch $v (CUDA $cuda): configure and compile the CUDA sources for sm_90 (GANX_CUDA=ON; no link, no op tests)"
      TORCH_CUDA_ARCH_LIST=9.0 GANX_CUDA=ON cmake -S . -B build/matrix -G Ninja -DPython_EXECUTABLE="$(command -v python)" \
        -DSKBUILD_PROJECT_VERSION=0.0.0 > "$log" 2>&1 || { cat "$log"; exit 1; }
      grep -E "ganx: (torch|CUDA)" "$log"
      ninja -C build/matrix -j2 CMakeFiles/_C.dir/csrc/cuda/upsample_conv2d.cu.o CMakeFiles/_C.dir/csrc/cuda/bce_loss.cu.o \
        > "$log" 2>&1 || { cat "$log"; exit 1; }
      rm -f "$log"
      exit 0
    fi
    if [[ $cuda == 13.* ]]; then
      stamp "torch $v (CUDA $cuda): build with the CUDA kernels for sm_90 (GANX_CUDA=ON)"
      TORCH_CUDA_ARCH_LIST=9.0 GANX_CUDA=ON pip install -v --no-build-isolation ".[test]" > "$log" 2>&1 || { cat "$log"; exit 1; }
      grep -E "ganx: (torch|CUDA)" "$log"
      python -c "import ganx._ext as e; assert e.CUDA_BUILT and e.CUDA_ARCHS == '90-real', (e.CUDA_BUILT, e.CUDA_ARCHS); print('CUDA kernels built for', e.CUDA_ARCHS)"
    else
      stamp "torch $v (CUDA $cuda): default build, which must build the CPU kernels only and say why"
      pip install -v --no-build-isolation ".[test]" > "$log" 2>&1 || { cat "$log"; exit 1; }
      grep -E "ganx: torch" "$log"
      grep -E "ganx: building CPU kernels only \(.+\)" "$log" || { cat "$log"; echo "the AUTO build did not say why it built the CPU kernels only"; exit 1; }
      python -c "import ganx._ext as e; assert not e.CUDA_BUILT; print('CPU-only build OK')"
    fi
    rm -f "$log"
    stamp "torch $v: op tests (CPU)"
    python -m pytest -q -p no:cacheprovider "${OP_TESTS[@]}"
    if [[ ! -f $SAVED/ganx/__init__.py ]]; then   # keep this build for the later versions' import checks
      cp -r "$(python -c 'import ganx, os; print(os.path.dirname(ganx.__file__))')" "$SAVED/ganx"
      python -c "import torch; print(torch.__version__)" > "$SAVED/torch_version"
    fi
  )
  rm -rf "$venv" build
done
stamp "torch matrix done: ${VERSIONS[*]}"
