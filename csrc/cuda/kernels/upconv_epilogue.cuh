// CUDA glue kernels of the upsample-conv (the convolution itself is cuDNN's): the forward
// epilogue (crop + interleave the phase maps, bias, activation), its backward twin
// (activation derivative, de-interleave, bias-gradient partial sums) and the weight fold /
// unfold. Arguments: csrc/upconv_epilogue.h; CPU twins: csrc/cpu/upconv_epilogue.h.
//
// Arithmetic in acc_t (fp32 for half / bfloat16, fp64 for double); 64-bit indexing throughout
// (these passes are memory bound, the index arithmetic is not what limits them).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "../launch.cuh"
#include "../../upconv_epilogue.h"

namespace ganx {
namespace cuda {

constexpr int kEpiThreads = 256;
constexpr int64_t kBwdChunk = 4096;   // output elements of one (n, o) plane per backward block
constexpr int64_t kMaxBlocks = 1 << 20;

// Forward: one thread per output element, walking the output in its memory order (NCHW or
// channels_last) so that the stores coalesce.
GANX_KERNEL_BOUND(upconv_epilogue_fwd_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t>
__global__ void GANX_BOUNDED(upconv_epilogue_fwd_kernel)(EpilogueFwdArgs<scalar_t> A, bool channels_last) {
  const int64_t s = A.s, Ho = A.H * s, Wo = A.W * s;
  const int64_t total = A.N * A.C * Ho * Wo;
  const acc_t slope = static_cast<acc_t>(A.slope);
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    int64_t n, o, y, x, r = idx;
    if (channels_last) {
      o = r % A.C; r /= A.C;
      x = r % Wo; r /= Wo;
      y = r % Ho; n = r / Ho;
    } else {
      x = r % Wo; r /= Wo;
      y = r % Ho; r /= Ho;
      o = r % A.C; n = r / A.C;
    }
    const int64_t i = y / s, a = y - i * s, j = x / s, b = x - j * s;
    acc_t v = static_cast<acc_t>(A.phase[a * s + b][n * A.ps.n + o * A.ps.c + i * A.ps.h + j * A.ps.w]);
    if (A.bias) v += static_cast<acc_t>(A.bias[o]);
    A.out[n * A.os.n + o * A.os.c + y * A.os.h + x * A.os.w] = static_cast<scalar_t>(act_forward(A.act, v, slope));
  }
}

// Backward: block = a chunk of kBwdChunk elements of one (n, o) plane of grad_out; each
// thread writes d pre into its phase map and the block reduces its share of the bias gradient
// in shared memory, in a fixed order: bias_partial[(n * C + o) * chunks + chunk]. The
// launch geometry depends only on the shapes, so results are identical on every GPU.
GANX_KERNEL_BOUND(upconv_epilogue_bwd_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t>
__global__ void GANX_BOUNDED(upconv_epilogue_bwd_kernel)(EpilogueBwdArgs<scalar_t, acc_t> A, int64_t chunks) {
  GANX_SHARED(acc_t, red, [kEpiThreads]);
  const int64_t s = A.s, Wo = A.W * s, P = A.H * s * Wo;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t blk = blockIdx.x;
  const int64_t chunk = blk % chunks, plane = blk / chunks;
  const int64_t o = plane % A.C, n = plane / A.C;
  const int64_t p_end = (chunk + 1) * kBwdChunk < P ? (chunk + 1) * kBwdChunk : P;
  acc_t sum = 0;
  for (int64_t p = chunk * kBwdChunk + threadIdx.x; p < p_end; p += blockDim.x) {
    const int64_t y = p / Wo, x = p - y * Wo;
    const int64_t i = y / s, a = y - i * s, j = x / s, b = x - j * s;
    const acc_t g = static_cast<acc_t>(A.grad[n * A.gs.n + o * A.gs.c + y * A.gs.h + x * A.gs.w]);
    const acc_t d = A.act == Act::None
                        ? g
                        : act_backward(A.act, g,
                                       static_cast<acc_t>(A.out[n * A.os.n + o * A.os.c + y * A.os.h + x * A.os.w]),
                                       slope);
    const scalar_t d_s = static_cast<scalar_t>(d);
    A.phase[a * s + b][n * A.ps.n + o * A.ps.c + i * A.ps.h + j * A.ps.w] = d_s;
    sum += static_cast<acc_t>(d_s);
  }
  if (A.bias_partial == nullptr) return;  // uniform over the block: no thread waits at a barrier alone
  red[threadIdx.x] = sum;
  __syncthreads();
  for (int w = kEpiThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) A.bias_partial[plane * chunks + chunk] = red[0];
}

// Fold / unfold: one thread per destination tap (d0, d1, r, q), sums in float64.
GANX_KERNEL_BOUND(fold_taps_kernel, kEpiThreads);
template <typename scalar_t>
__global__ void GANX_BOUNDED(fold_taps_kernel)(FoldArgs F, const scalar_t* __restrict__ src,
                                               scalar_t* __restrict__ dst) {
  const int64_t R = F.rows_dst, total = F.n0 * F.n1 * R * R;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int32_t q = static_cast<int32_t>(idx % R);
    const int32_t r = static_cast<int32_t>((idx / R) % R);
    const int64_t d1 = (idx / (R * R)) % F.n1, d0 = idx / (R * R * F.n1);
    double acc = 0;
    for (int32_t x = 0; x < F.count[r]; ++x)
      for (int32_t y = 0; y < F.count[q]; ++y)
        acc += static_cast<double>(src[fold_offset(F.src, d0, d1, F.list[r][x], F.list[q][y])]);
    dst[fold_offset(F.dst, d0, d1, r, q)] = static_cast<scalar_t>(acc);
  }
}

inline unsigned grid_for(int64_t total) {
  const int64_t blocks = (total + kEpiThreads - 1) / kEpiThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// ---- host launchers (raw pointers) ----

template <typename scalar_t, typename acc_t>
void launch_upconv_epilogue_fwd(const EpilogueFwdArgs<scalar_t>& A, bool channels_last, dev::Stream stream) {
  const int64_t total = A.N * A.C * A.H * A.s * A.W * A.s;
  if (total == 0) return;
  dev::launch(upconv_epilogue_fwd_kernel<scalar_t, acc_t>, dim3(grid_for(total)), dim3(kEpiThreads), 0, stream, A,
              channels_last);
}

inline int64_t upconv_epilogue_bwd_chunks(int64_t H, int64_t W, int64_t s) {
  return (H * s * W * s + kBwdChunk - 1) / kBwdChunk;
}

// bias_partial (if not null) must hold N * C * upconv_epilogue_bwd_chunks(H, W, s) entries.
template <typename scalar_t, typename acc_t>
void launch_upconv_epilogue_bwd(const EpilogueBwdArgs<scalar_t, acc_t>& A, dev::Stream stream) {
  const int64_t chunks = upconv_epilogue_bwd_chunks(A.H, A.W, A.s);
  const int64_t blocks = A.N * A.C * chunks;
  if (blocks == 0) return;
  dev::launch(upconv_epilogue_bwd_kernel<scalar_t, acc_t>, dim3(static_cast<unsigned>(blocks)), dim3(kEpiThreads), 0,
              stream, A, chunks);
}

template <typename scalar_t>
void launch_fold_taps(const FoldArgs& F, const scalar_t* src, scalar_t* dst, dev::Stream stream) {
  const int64_t total = F.n0 * F.n1 * F.rows_dst * F.rows_dst;
  if (total == 0) return;
  dev::launch(fold_taps_kernel<scalar_t>, dim3(grid_for(total)), dim3(kEpiThreads), 0, stream, F, src, dst);
}

}  // namespace cuda
}  // namespace ganx
