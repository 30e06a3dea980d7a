// Small kernels that pin down the emulator's own semantics (tests/test_emu_selftest.py):
// written like csrc/cuda/kernels/*.cuh, so nvcc would compile them too. `bug` switches on a
// deliberate mistake that the emulator must report.
#pragma once

#include <c10/util/Half.h>

#include <cstdint>

#include "cuda/launch.cuh"

namespace ganx {
namespace emu_selftest {

constexpr int kOps = 7;

// Per thread: shfl idx (src 3, width 8), up (2, width 8), down (3, width 16), xor (5), ballot
// (lane % 3 == 0), any (lane == 7), all (lane < 32), each with the mask of the lanes that exist.
__global__ void warp_ops(int* out) {
  const int t = threadIdx.x, lane = t & 31, base = t - lane;
  const int n = static_cast<int>(blockDim.x) - base < 32 ? static_cast<int>(blockDim.x) - base : 32;
  const unsigned mask = n == 32 ? 0xffffffffu : (1u << n) - 1u;
  const int v = lane * 10 + t / 32;
  int* o = out + (blockIdx.x * blockDim.x + t) * kOps;
  o[0] = __shfl_sync(mask, v, 3, 8);
  o[1] = __shfl_up_sync(mask, v, 2, 8);
  o[2] = __shfl_down_sync(mask, v, 3, 16);
  o[3] = __shfl_xor_sync(mask, v, 5);
  o[4] = static_cast<int>(__ballot_sync(mask, lane % 3 == 0));
  o[5] = __any_sync(mask, lane == 7);
  o[6] = __all_sync(mask, lane < 32);
}

// Neighbour exchange through dynamic shared memory; bug 1 reads one past its end.
__global__ void dyn_shared(float* out, int bug) {
  GANX_DYNAMIC_SHARED(float, buf);
  const int t = threadIdx.x, n = blockDim.x;
  buf[t] = static_cast<float>(t + 1);
  __syncthreads();
  const int j = bug == 1 ? t + 1 : (t + 1) % n;
  out[blockIdx.x * n + t] = buf[j];
}

// Every thread of every block adds 1 and its index; bug 1 drops the atomic (a plain +=: a race).
__global__ void atomics(int* count, unsigned long long* sum, float* fsum, int bug) {
  const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
  if (bug == 1) {
    *count += 1;
  } else {
    atomicAdd(count, 1);
  }
  atomicAdd(sum, static_cast<unsigned long long>(i));
  atomicAdd(fsum, 0.5f);
}

// Reads a shared array before anything is written (poison: NaN); bug 1 returns early in one
// thread before the barrier, bug 2 reaches a different barrier in one warp.
__global__ void barriers(float* out, int bug) {
  GANX_SHARED(float, s, [64]);
  const int t = threadIdx.x;
  out[t] = s[t];  // poison
  if (bug == 1 && t == 5) return;
  if (bug == 2 && t >= 32) {
    __syncthreads();
  } else {
    s[t] = static_cast<float>(t);
    __syncthreads();
  }
  out[64 + t] = s[63 - t];
}

// Lanes exchange through shared memory; __syncwarp orders it, bug 1 leaves it out (a race).
__global__ void syncwarp_order(int* out, int bug) {
  GANX_SHARED(int, s, [32]);
  const int lane = threadIdx.x;
  s[lane] = lane * 3;
  if (bug != 1) __syncwarp();
  out[lane] = s[lane ^ 1];
}

// c10::Half arithmetic as the kernels use it (computed in float, rounded to half).
__global__ void half_math(const c10::Half* a, const c10::Half* b, c10::Half* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = static_cast<c10::Half>(static_cast<float>(a[i]) * static_cast<float>(b[i]) + 1.0f);
}

// A static shared array read through a pointer (no bounds UBSan could know); bug 1 reads one
// element past its end: the exact-size allocation puts AddressSanitizer's redzone right there.
__global__ void shared_ptr(float* out, int bug) {
  GANX_SHARED(float, s, [33]);
  float* p = s;
  const int t = threadIdx.x;
  p[t] = static_cast<float>(t);
  __syncthreads();
  out[t] = p[t + (bug == 1 ? 1 : 0)];
}

__global__ void nothing() {}

// Static shared memory and a launch bound outside ganx::cuda. The kernel's own 32000-byte array
// sits in a branch (take >= 1): it counts for every launch, taken or not; the helper's 17600
// bytes (a __device__ function's declaration, its own symbol) count when reached (take == 2),
// which makes 49600 bytes > 48 KiB.
__device__ float smem_helper(int t) {
  GANX_SHARED(float, h, [4400]);
  h[t] = static_cast<float>(t);
  return h[t];
}
GANX_KERNEL_BOUND(smem_static, 64);
__global__ void GANX_BOUNDED(smem_static)(float* out, int take) {
  const int t = threadIdx.x;
  out[t] = 0.f;
  if (take >= 1) {
    GANX_SHARED(float, big, [8000]);
    big[t] = static_cast<float>(t);
    out[t] = big[t];
  }
  if (take == 2) out[t] += smem_helper(t);
}

// ------------------------------------------------------------------ launchers
inline void launch_warp_ops(int* out, int blocks, int threads) {
  dev::launch(warp_ops, dim3(blocks), dim3(threads), 0, nullptr, out);
}
inline void launch_dyn_shared(float* out, int blocks, int threads, int bug) {
  dev::launch(dyn_shared, dim3(blocks), dim3(threads), threads * sizeof(float), nullptr, out, bug);
}
inline void launch_atomics(int* count, unsigned long long* sum, float* fsum, int blocks, int threads, int bug) {
  dev::launch(atomics, dim3(blocks), dim3(threads), 0, nullptr, count, sum, fsum, bug);
}
inline void launch_barriers(float* out, int bug) { dev::launch(barriers, dim3(1), dim3(64), 0, nullptr, out, bug); }
inline void launch_syncwarp_order(int* out, int bug) {
  dev::launch(syncwarp_order, dim3(1), dim3(32), 0, nullptr, out, bug);
}
inline void launch_half_math(const c10::Half* a, const c10::Half* b, c10::Half* out, int n) {
  dev::launch(half_math, dim3((n + 127) / 128), dim3(128), 0, nullptr, a, b, out, n);
}
inline void launch_shared_ptr(float* out, int bug) { dev::launch(shared_ptr, dim3(1), dim3(33), 0, nullptr, out, bug); }
inline void launch_nothing(dim3 grid, dim3 block, size_t smem) { dev::launch(nothing, grid, block, smem, nullptr); }
inline void launch_smem_static(float* out, int threads, size_t smem, int take) {
  dev::launch(smem_static, dim3(1), dim3(threads), smem, nullptr, out, take);
}

}  // namespace emu_selftest
}  // namespace ganx
