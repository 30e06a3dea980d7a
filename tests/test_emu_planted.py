"""Proof that the CUDA emulator's checks catch real kernel bugs: a patched copy of the BCE kernel
header with planted bugs (an off-by-one at a shared array's edge and at the input's tail, a
removed barrier, a barrier one warp skips, a shuffle mask without an active lane, a grid
dimension above 65535, a launch above the kernel's __launch_bounds__: each switched on at run
time by GANX_PLANT=<n>; static shared memory over 48 KiB in a branch that never runs: in the
double instantiation only), built in the variant that must catch it. Every bug must make the
run fail with the expected report, naming the kernel, block and thread; the same copy with no
bug switched on must pass the same runs (float32).
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
    # 7 (always in the copy, caught for double only): 6100 more accumulators of static shared
    # memory, 24 KiB in float, 48.8 KiB in double, declared in a branch that never runs
    # (GANX_PLANT is never 7): a GPU allocates it anyway
    ("  GANX_SHARED(bool, last, [1]);\n",
     "  GANX_SHARED(bool, last, [1]);\n  if (ganx_plant(7)) {\n"
     "    GANX_SHARED(A, pad, [6100]);\n    pad[threadIdx.x] = A(0);\n  }\n"),
    # 8: a block of 512 threads for a kernel declared __launch_bounds__(256) (a GPU refuses the
    # launch; 512 is within the 1024-thread limit, so only the bound catches it)
    ("dim3(kThreads), 0, stream", "dim3(ganx_plant(8) ? 2 * kThreads : kThreads), 0, stream"),
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
    8: ("plain", r"ganx-emu: FAILED in kernel ganx::cuda_bce::bce_kernel<float.*\(512,1,1\).*too many resources "
                 r"requested for launch: 512 threads per block exceed the kernel's __launch_bounds__\(256\)"),
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


def _static_smem(exe):
    """{function: static shared bytes} of every function with GANX_SHARED in the binary."""
    rep = H.run("plain", [H.Case("s", "static_smem", "float32")], exe=exe)["s"].arrays["report"].decode()
    return {ln.split(" ", 1)[1]: int(ln.split(" ", 1)[0]) for ln in rep.splitlines()}


def test_static_shared_memory_over_48k_is_caught_for_the_dtype_that_exceeds_it(planted):
    # 6100 accumulators in a branch no thread takes: 24 KiB in float (passes), 48.8 KiB in double
    # (must fail): the limit holds for every instantiation, counting every declaration of the
    # kernel whether or not it runs.
    # (float32: test_planted_copy_without_a_bug_passes)
    with pytest.raises(H.EmuFailure, match=r"bce_kernel<double.*static shared memory exceeds 48 KiB: 49185 bytes "
                                           r"in this instantiation \(.*'pad' \(48800 bytes\).*\), whichever "
                                           r"branches run"):
        _run("plain", planted, 0, _case("float64"))
    # the static report sees it without a launch, for each instantiation (Elem: 4 per dtype:
    # LogitConst, CriticConst, LogitTensor, ProbTensor)
    sizes = _static_smem(H.build("plain", include_first=planted, tag="planted"))
    over = sorted(f for f, n in sizes.items() if n > 48 * 1024)
    assert len(over) == 4 and all("bce_kernel<double" in f for f in over), over


def test_every_kernel_instantiation_fits_48k_of_static_shared_memory():
    # every instantiation compiled into the emulated build (each dtype, launched by a test or not)
    sizes = _static_smem(H.build("plain"))
    kernels = [f for f in sizes if "ganx::cuda" in f]
    # the four dtypes (x 32- and 64-bit index types for the epilogue)
    assert len([f for f in kernels if "upconv_epilogue_bwd_planes_kernel" in f]) == 8
    assert len([f for f in kernels if "upconv_bias_grad_kernel" in f]) == 4
    assert len([f for f in kernels if "bce_kernel" in f]) == 16  # 4 dtypes x 4 element kinds (BCE and critic constants, logit and probability tensors)
    assert all(0 < sizes[f] <= 48 * 1024 for f in kernels), sizes


def test_every_cuda_kernel_declares_a_checked_launch_bound():
    # the emulator checks a bound written with GANX_KERNEL_BOUND / GANX_BOUNDED (a bare
    # __launch_bounds__ does not compile there); every ganx kernel has one
    import re
    for h in sorted((H.ROOT / "csrc" / "cuda" / "kernels").glob("*.cuh")):
        src = h.read_text()
        kernels = re.findall(r"__global__\s+void\s+(\w+(?:\(\w+\))?)", src)
        assert kernels, h
        for k in kernels:
            assert k.startswith("GANX_BOUNDED("), f"{h.name}: kernel {k} has no GANX_BOUNDED launch bound"
        for n in re.findall(r"GANX_BOUNDED\((\w+)\)", src):
            assert f"GANX_KERNEL_BOUND({n}," in src, n
