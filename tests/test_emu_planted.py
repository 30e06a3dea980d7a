"""Proof that the CUDA emulator's checks catch real kernel bugs: a patched copy of the BCE kernel
header with planted bugs (each one switched on at run time by GANX_PLANT=<n>, or at build time
for the shared-memory size), built in the variant that must catch it. Every bug must make the
run fail with the expected report, naming the kernel, block and thread; the same copy with no
bug switched on must pass the same runs.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import harness as H  # noqa: E402

HEADER = H.ROOT / "csrc" / "cuda" / "kernels" / "bce_loss.cuh"

# (original text, planted text): each original must occur exactly once in the header.
PATCHES = [
    # 1: off-by-one at the edge of a shared array (warp 0 reads one warp sum too many)
    ("v[k] = lane < kWarps ? sh[k][lane] : A(0);",
     "v[k] = lane < kWarps + (ganx_plant(1) ? 1 : 0) ? sh[k][lane] : A(0);"),
    # 2: off-by-one at the tail of the input (the last partial item read in full)
    ("const int m = sn - j0 < V ? static_cast<int>(sn - j0) : V;",
     "const int m = (sn - j0 < V && !ganx_plant(2)) ? static_cast<int>(sn - j0) : V;"),
    # 3: a removed __syncthreads; 4: the same barrier skipped by one warp
    ("  __syncthreads();\n  if (warp == 0) {",
     "  if (!ganx_plant(3) && !(ganx_plant(4) && warp == 3)) __syncthreads();\n  if (warp == 0) {"),
    # 5: a shuffle mask that leaves out an active lane
    ("for (int off = 16; off > 0; off >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], off);",
     "for (int off = 16; off > 0; off >>= 1) v[k] += __shfl_down_sync(ganx_plant(5) ? 0x7fffffffu : 0xffffffffu, v[k], off);"),
    # 6: a grid dimension above 65535
    ("dim3(static_cast<unsigned>(blocks))",
     "(ganx_plant(6) ? dim3(1, 65536) : dim3(static_cast<unsigned>(blocks)))"),
    # 7 (build time): 6100 more accumulators of static shared memory: over 48 KiB for double only
    ("  GANX_SHARED(bool, last, [1]);\n",
     "  GANX_SHARED(bool, last, [1]);\n#ifdef GANX_PLANT_SMEM\n  GANX_SHARED(A, pad, [GANX_PLANT_SMEM]);\n"
     "  if (threadIdx.x == 0) pad[0] = A(0);\n#endif\n"),
]
PLANT_FN = """
#include <cstdlib>
namespace ganx { namespace cuda_bce {
// Planted-bug switch of the test copy (tests/test_emu_planted.py).
inline bool ganx_plant(int n) {
  static const int id = std::getenv("GANX_PLANT") ? std::atoi(std::getenv("GANX_PLANT")) : 0;
  return id == n;
}
} }
"""

EXPECT = {  # bug -> (variant, pattern of its report)
    1: ("asan", r"out of bounds|buffer-overflow"),
    2: ("asan", r"heap-buffer-overflow"),
    3: ("race", r"ThreadSanitizer: data race"),
    4: ("plain", r"ganx-emu: FAILED in kernel ganx::cuda_bce::bce_kernel<float.*block \(0,0,0\) thread \(\d+,0,0\): .*__syncthreads"),
    5: ("plain", r"ganx-emu: FAILED in kernel ganx::cuda_bce::bce_kernel.*thread \(\d+,0,0\): lane 31 calls a warp operation with mask 0x7fffffff, which leaves out the calling lane"),
    6: ("plain", r"ganx-emu: FAILED in kernel ganx::cuda_bce::bce_kernel.*grid \(1,65536,1\) exceeds the limits"),
}


def _planted_dir(tmp_root: Path) -> Path:
    src = HEADER.read_text()
    for old, new in PATCHES:
        assert src.count(old) == 1, f"planted-bug patch no longer matches the kernel header: {old!r}"
        src = src.replace(old, new)
    src = src.replace('#include "cuda/launch.cuh"\n', '#include "cuda/launch.cuh"\n' + PLANT_FN, 1)
    d = tmp_root / "planted"
    (d / "cuda" / "kernels").mkdir(parents=True, exist_ok=True)
    (d / "cuda" / "kernels" / "bce_loss.cuh").write_text(src)
    return d


@pytest.fixture(scope="module")
def planted():
    root = H.ROOT / "build" / "emu-planted-src"
    return _planted_dir(root)


def _case(dtype="float32"):
    x0 = torch.randn(1001, dtype=torch.float64).to(H.DTYPES[dtype]) * 4  # 1001: a partial last item
    x1 = torch.randn(333, dtype=torch.float64).to(H.DTYPES[dtype]) * 4
    return H.Case("p", "bce_disc", dtype, {"x0": x0, "x1": x1}, {"red": 1, "need_grad": 1})


def _run(variant, planted, bug, case=None, **build_kw):
    exe = H.build(variant, include_first=planted, tag="planted" + build_kw.pop("tag", ""), **build_kw)
    old = os.environ.get("GANX_PLANT")
    os.environ["GANX_PLANT"] = str(bug)
    try:
        return H.run(variant, [case or _case()], exe=exe)
    finally:
        if old is None:
            del os.environ["GANX_PLANT"]
        else:
            os.environ["GANX_PLANT"] = old


@pytest.mark.parametrize("variant", H.VARIANTS)
def test_planted_copy_without_a_bug_passes(variant, planted):
    r = _run(variant, planted, 0)["p"]
    assert r.int("launches") == 1


@pytest.mark.parametrize("bug", sorted(EXPECT))
def test_planted_bug_is_caught(bug, planted):
    variant, pattern = EXPECT[bug]
    with pytest.raises(H.EmuFailure, match=pattern):
        _run(variant, planted, bug)


def test_static_shared_memory_over_48k_is_caught_for_the_dtype_that_exceeds_it(planted):
    # 6100 accumulators: 24 KiB in float (passes), 48.8 KiB in double (must fail): the limit is
    # checked for every instantiation that runs, not for one dtype.
    kw = dict(defines=["GANX_PLANT_SMEM=6100"], tag="-smem")
    assert _run("plain", planted, 0, _case("float32"), **dict(kw))["p"].int("launches") == 1
    with pytest.raises(H.EmuFailure, match=r"bce_kernel<double.*static shared memory exceeds 48 KiB"):
        _run("plain", planted, 0, _case("float64"), **dict(kw))
