#!/usr/bin/env bash
# The torch range that pyproject.toml declares, built and tested: the declared floor, 2.11.0 and
# the newest release tested (2.15.0), each in its own fresh venv from the registry (the machine's
# local cap on torch is lifted with PIP_CONSTRAINT=/dev/null for these installs only).
#  - a CUDA 13 torch (like the machine's nvcc 13.0): CUDA kernels compiled for sm_90 only
#    (GANX_CUDA=ON, TORCH_CUDA_ARCH_LIST=9.0), then the op tests on the CPU (no GPU here);
#  - any other torch (the floor's wheels are CUDA 12): the default (AUTO) build must build the
#    CPU kernels only and say why in one line; then the op tests.
#  - across two versions: the ganx built against the previous version, imported under the next
#    torch, must fail with ganx's ImportError that says how to rebuild (not crash, not load).
# Each venv is deleted after its job (a CUDA torch is ~4-5 GB installed).
# Usage: bash .ci/torch_matrix.sh [VERSION...]   (default: the floor, 2.11.0, 2.15.0)
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
if [[ $# -gt 0 ]]; then VERSIONS=("$@"); else VERSIONS=("$FLOOR" 2.11.0 2.15.0); fi
OP_TESTS=(tests/test_upsample_conv.py tests/test_conv_transpose.py tests/test_bce_loss.py)
export PIP_DISABLE_PIP_VERSION_CHECK=1 MAX_JOBS=${MAX_JOBS:-2} CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
unset GANX_CUDA TORCH_CUDA_ARCH_LIST CUDACXX CUDA_HOME CUDA_PATH || true

SAVED=$(mktemp -d)      # the ganx package built against the previous version, for the import check
trap 'rm -rf "$SAVED" .ci-venv-torch build' EXIT
prev=""
for v in "${VERSIONS[@]}"; do
  venv=.ci-venv-torch
  rm -rf "$venv" build
  "$PY" -m venv "$venv"
  (
    source "$venv/bin/activate"
    # Lift the machine's cap for every install of this job: under it, ganx's own install would
    # "fix" a torch above the cap by replacing it.
    export PIP_CONSTRAINT=/dev/null
    stamp "torch $v: install (fresh venv)"
    pip install -q "torch==$v" cmake ninja scikit-build-core numpy pytest hypothesis expecttest
    cuda=$(python -c "import torch; print(torch.version.cuda or 'none')")
    log=$(mktemp)
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
    if [[ -n $prev ]]; then
      stamp "torch $v: ganx built against torch $prev must refuse to import, saying how to rebuild"
      set +e
      out=$(cd "$SAVED" && PYTHONPATH="$SAVED" python -c "import ganx" 2>&1)
      rc=$?
      set -e
      echo "$out" | tail -n 6
      if [[ $rc -ne 1 ]] || ! grep -q "ImportError: ganx: .*" <<<"$out" || ! grep -q "Rebuild ganx against the torch you run" <<<"$out"; then
        echo "import of a ganx built against torch $prev under torch $v: exit $rc, without ganx's rebuild message"; exit 1
      fi
    fi
    stamp "torch $v: op tests (CPU)"
    python -m pytest -q -p no:cacheprovider "${OP_TESTS[@]}"
    # Keep this build for the next version's import check.
    rm -rf "$SAVED/ganx"
    cp -r "$(python -c 'import ganx, os; print(os.path.dirname(ganx.__file__))')" "$SAVED/ganx"
  )
  rm -rf "$venv" build
  prev=$v
done
stamp "torch matrix done: ${VERSIONS[*]}"
