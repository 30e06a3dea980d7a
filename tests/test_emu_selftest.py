"""The CUDA emulator's own semantics (tests/emu/selftest_kernels.cuh): warp shuffles and votes
as CUDA defines them (width segments, a lane's own value past its segment, partial warps),
dynamic shared memory, atomics, the poison of unwritten shared memory, c10::Half arithmetic,
and each check failing loudly (barriers, races, bounds, launch limits).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "emu"))
import harness as H  # noqa: E402


def st(kernel, variant="plain", arrays=None, **kv):
    c = H.Case("s", "selftest", "float32", arrays or {}, dict(kernel=kernel, **kv))
    return H.run(variant, [c])["s"]


def expected_warp_ops(blocks, threads):
    out = []
    for _ in range(blocks):
        for t in range(threads):
            lane, base = t % 32, t - t % 32
            n = min(threads - base, 32)
            val = lambda ln: ln * 10 + t // 32  # noqa: E731  (same warp: t // 32)

            def seg_src(src, width):
                return src if src < n else lane  # every source below is inside the lane's segment

            s8 = lane & ~7
            idx = s8 + 3
            up = lane - 2 if lane - 2 >= s8 else lane
            s16 = lane & ~15
            down = lane + 3 if lane + 3 < s16 + 16 else lane
            xo = lane ^ 5
            ballot = sum(1 << m for m in range(n) if m % 3 == 0)
            out += [val(seg_src(idx, 8)), val(up), val(seg_src(down, 16)), val(xo), ballot - (1 << 32) * (ballot >= 1 << 31),
                    int(7 < n), 1]
    return out


@pytest.mark.parametrize("variant", H.VARIANTS)
def test_warp_shuffles_and_votes(variant):
    r = st("warp_ops", variant, blocks=2, threads=64)
    assert r.tensor("out", torch.int32).tolist() == expected_warp_ops(2, 64)


def test_partial_warp_shuffle_reading_a_missing_lane_fails():
    # 40 threads: the second warp has lanes 0-7, and the kernel passes their mask (0xff); its
    # __shfl_down_sync(delta 3) then reads lane 8 from lane 5, a lane that is not there: undefined
    # on the GPU, an error here.
    with pytest.raises(H.EmuFailure, match=r"thread \(37,0,0\): shuffle \(mask 0x000000ff\) of lane 5 reads lane 8, "
                                           r"which is not in the mask"):
        st("warp_ops", blocks=1, threads=40)


@pytest.mark.parametrize("variant", H.VARIANTS)
def test_dynamic_shared_memory(variant):
    r = st("dyn_shared", variant, blocks=3, threads=48)
    exp = [float((t + 1) % 48 + 1) for _ in range(3) for t in range(48)]
    assert r.tensor("out", torch.float32).tolist() == exp


def test_one_past_dynamic_shared_memory_is_caught():
    with pytest.raises(H.EmuFailure, match="heap-buffer-overflow"):
        st("dyn_shared", "asan", blocks=1, threads=48, bug=1)


@pytest.mark.parametrize("variant", H.VARIANTS)
def test_atomics(variant):
    r = st("atomics", variant, blocks=3, threads=96)
    n = 3 * 96
    assert r.int("count") == n and int(r.kv["sum"]) == n * (n - 1) // 2 and float(r.kv["fsum"]) == n * 0.5


def test_plain_increment_instead_of_an_atomic_is_a_race():
    with pytest.raises(H.EmuFailure, match="ThreadSanitizer: data race"):
        st("atomics", "race", blocks=1, threads=64, bug=1)


def test_unwritten_shared_memory_reads_poison_and_barrier_orders():
    r = st("barriers", "asan")
    out = r.tensor("out", torch.float32)
    assert out[:64].isnan().all()  # never written: the 0xFF poison
    assert out[64:].tolist() == [float(63 - t) for t in range(64)]


def test_one_past_a_static_shared_array_is_caught():
    assert st("shared_ptr", "asan").tensor("out", torch.float32).tolist() == [float(t) for t in range(33)]
    with pytest.raises(H.EmuFailure, match="heap-buffer-overflow"):
        st("shared_ptr", "asan", bug=1)


def test_barrier_after_an_exited_thread_fails():
    with pytest.raises(H.EmuFailure, match=r"barriers.*__syncthreads at .* is reached by 63 of 64 threads: 1 have exited"):
        st("barriers", bug=1)


def test_divergent_barriers_fail():
    with pytest.raises(H.EmuFailure, match="divergent __syncthreads"):
        st("barriers", bug=2)


def test_syncwarp_orders_lanes_and_its_absence_is_a_race():
    r = st("syncwarp", "race")
    assert r.tensor("out", torch.int32).tolist() == [(lane ^ 1) * 3 for lane in range(32)]
    with pytest.raises(H.EmuFailure, match="ThreadSanitizer: data race"):
        st("syncwarp", "race", bug=1)


def test_half_arithmetic_matches_torch():
    a, b = torch.randn(300).half(), torch.randn(300).half()
    r = st("half", "asan", arrays={"a": a, "b": b})
    assert torch.equal(r.tensor("out", torch.float16), (a.float() * b.float() + 1).half())


@pytest.mark.parametrize("cfg,msg", [
    (dict(bx=1025), "too many threads per block"),
    (dict(bx=512, by=3), "too many threads per block"),
    (dict(bx=1, bz=65), "too many threads per block"),
    (dict(gy=65536), "exceeds the limits"),
    (dict(gz=70000), "exceeds the limits"),
    (dict(smem=48 * 1024 + 4), "dynamic shared memory 49156 bytes exceeds 48 KiB"),
])
def test_launch_limits(cfg, msg):
    with pytest.raises(H.EmuFailure, match=r"FAILED in kernel ganx::emu_selftest::nothing.*" + msg):
        st("launch", **cfg)


def test_launch_at_the_limits_runs():
    r = st("launch", gx=2, gy=65535, bx=1)
    assert r.int("launches") == 1
    assert st("launch", bx=1024, smem=48 * 1024).int("launches") == 1
    assert st("launch", gx=0).int("launches") == 0  # an empty grid is no launch, as on the GPU path


def test_static_shared_memory_counts_untaken_branches_and_reached_helpers():
    # the kernel's 32000-byte array counts whether or not its branch runs (a GPU allocates it)
    for take in (0, 1):
        r = st("smem_static", threads=64, take=take)
        assert r.log.endswith(" 64,1,1 0 static=32000 bound=64\n"), r.log
        assert r.tensor("out", torch.float32).tolist() == [float(t) * take for t in range(64)]
    with pytest.raises(H.EmuFailure, match=r"smem_static.*static \(32000\) \+ dynamic \(17200\) shared memory "
                                           r"exceeds 48 KiB"):
        st("smem_static", threads=64, take=0, smem=17200)
    # a __device__ helper's array counts for the kernel when a thread reaches it
    with pytest.raises(H.EmuFailure, match=r"smem_static.*static shared memory exceeds 48 KiB: 49600 bytes with "
                                           r"'h' \(17600 bytes, declared in a __device__ function\)"):
        st("smem_static", threads=64, take=2)


def test_launch_bound_outside_ganx_cuda_is_checked():
    st("smem_static", threads=64)
    with pytest.raises(H.EmuFailure, match=r"FAILED in kernel ganx::emu_selftest::smem_static <<<\(1,1,1\), "
                                           r"\(65,1,1\), 0>>>.*65 threads per block exceed the kernel's "
                                           r"__launch_bounds__\(64\)"):
        st("smem_static", threads=65)

