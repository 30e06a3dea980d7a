// CUDA glue kernels of the upsample-conv (the convolution itself is cuDNN's): the forward
// epilogue (crop + interleave the phase maps, bias, activation), its backward twin
// (activation derivative, de-interleave, bias-gradient partial sums) and the weight fold /
// unfold. Arguments: csrc/upconv_epilogue.h; CPU twins: csrc/cpu/upconv_epilogue.h.
//
// Arithmetic in acc_t (fp32 for half / bfloat16, fp64 for double). Index arithmetic in 32 bits
// whenever every offset a launch computes fits (index_t = int32_t, the usual case: a 64-bit
// division is a call to a ~70-instruction routine in SASS, a 32-bit one a few inline
// instructions); 64 bits otherwise. tests/test_sass.py checks the 32-bit instantiations.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "../launch.cuh"
#include "../../upconv_epilogue.h"

namespace ganx {
namespace cuda {

constexpr int kEpiThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20;
constexpr int64_t kBwdItems = 16;           // elements per thread (bias-gradient partials) in the backward
constexpr int64_t kBwdChunk = kEpiThreads * 8;  // elements of one channel per block, NCHW backward
constexpr int64_t kBwdMaxThreads = int64_t(1) << 22;  // channels_last backward: threads at most
constexpr int64_t kIndex32Limit = int64_t(1) << 30;  // offsets below this (and a grid-stride step) fit int32

// The largest element offset of an N x C x H x W view with strides st (strides are >= 0).
GANX_HD int64_t max_offset(const Strides4& st, int64_t N, int64_t C, int64_t H, int64_t W) {
  return (N - 1) * st.n + (C - 1) * st.c + (H - 1) * st.h + (W - 1) * st.w;
}

// Sizes and strides of a launch in index_t.
template <typename I>
struct Dims4 {
  I n, c, h, w;
};
template <typename I>
GANX_HD Dims4<I> dims_of(const Strides4& s) {
  return {static_cast<I>(s.n), static_cast<I>(s.c), static_cast<I>(s.h), static_cast<I>(s.w)};
}

// Forward: one thread per output element, walking the output in its memory order (NCHW or
// channels_last) so that the stores coalesce.
GANX_KERNEL_BOUND(upconv_epilogue_fwd_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void GANX_BOUNDED(upconv_epilogue_fwd_kernel)(EpilogueFwdArgs<scalar_t> A, bool channels_last) {
  const index_t s = A.s, C = static_cast<index_t>(A.C), Ho = static_cast<index_t>(A.H) * s,
                Wo = static_cast<index_t>(A.W) * s;
  const index_t total = static_cast<index_t>(A.N) * C * Ho * Wo;
  const Dims4<index_t> ps = dims_of<index_t>(A.ps), os = dims_of<index_t>(A.os);
  const acc_t slope = static_cast<acc_t>(A.slope);
  for (index_t idx = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    index_t n, o, y, x, r = idx;
    if (channels_last) {
      o = r % C; r /= C;
      x = r % Wo; r /= Wo;
      y = r % Ho; n = r / Ho;
    } else {
      x = r % Wo; r /= Wo;
      y = r % Ho; r /= Ho;
      o = r % C; n = r / C;
    }
    const index_t i = y / s, a = y - i * s, j = x / s, b = x - j * s;
    acc_t v = static_cast<acc_t>(A.phase[a * s + b][n * ps.n + o * ps.c + i * ps.h + j * ps.w]);
    if (A.bias) v += static_cast<acc_t>(A.bias[o]);
    A.out[n * os.n + o * os.c + y * os.h + x * os.w] = static_cast<scalar_t>(act_forward(A.act, v, slope));
  }
}

// Backward of one element of grad_out at (n, o, y, x): d pre = act'(out) * grad, written to its
// phase map; returns d pre rounded to scalar_t (what the bias gradient sums).
template <typename scalar_t, typename acc_t, typename index_t>
__device__ __forceinline__ acc_t epilogue_bwd_elem(const EpilogueBwdArgs<scalar_t, acc_t>& A, const Dims4<index_t>& gs,
                                                   const Dims4<index_t>& os, const Dims4<index_t>& ps, index_t s,
                                                   acc_t slope, index_t n, index_t o, index_t y, index_t x) {
  const index_t i = y / s, a = y - i * s, j = x / s, b = x - j * s;
  const acc_t g = static_cast<acc_t>(A.grad[n * gs.n + o * gs.c + y * gs.h + x * gs.w]);
  const acc_t d = A.act == Act::None
                      ? g
                      : act_backward(A.act, g, static_cast<acc_t>(A.out[n * os.n + o * os.c + y * os.h + x * os.w]),
                                     slope);
  const scalar_t d_s = static_cast<scalar_t>(d);
  A.phase[a * s + b][n * ps.n + o * ps.c + i * ps.h + j * ps.w] = d_s;
  return static_cast<acc_t>(d_s);
}

// What every backward kernel (the phase epilogue's and the replicate form's, planes and rows)
// reads of its arguments, in index_t: the map it walks, W wide, P = H * W elements per plane and
// M = N * P per channel (the output, scale s, for the phase epilogue; the input-resolution map,
// scale 1, for the replicate form), the strides and the slope.
template <typename index_t, typename acc_t>
struct BwdWalk {
  index_t s, C, W, P, M;
  Dims4<index_t> gs, os, ps;
  acc_t slope;
  // element q of a channel's N planes -> (n, row y, column x) of the walked map
  GANX_HD void locate(index_t q, index_t& n, index_t& y, index_t& x) const {
    n = q / P;
    const index_t p = q - n * P;
    y = p / W;
    x = p - y * W;
  }
};

template <typename index_t, typename scalar_t, typename acc_t>
__device__ __forceinline__ BwdWalk<index_t, acc_t> bwd_walk(const EpilogueBwdArgs<scalar_t, acc_t>& A, index_t scale) {
  BwdWalk<index_t, acc_t> v;
  v.s = A.s;
  v.C = static_cast<index_t>(A.C);
  v.W = static_cast<index_t>(A.W) * scale;
  v.P = static_cast<index_t>(A.H) * scale * v.W;
  v.M = static_cast<index_t>(A.N) * v.P;
  v.gs = dims_of<index_t>(A.gs);
  v.os = dims_of<index_t>(A.os);
  v.ps = dims_of<index_t>(A.ps);
  v.slope = static_cast<acc_t>(A.slope);
  return v;
}

// A planes kernel's block: chunk `chunk` of channel o, elements [q_begin, q_end) of its N planes.
template <typename index_t>
struct PlanesBlock {
  index_t chunk, o, q_begin, q_end;
};

template <typename index_t>
__device__ __forceinline__ PlanesBlock<index_t> planes_block(index_t parts, index_t M) {
  const index_t blk = blockIdx.x;
  const index_t chunk = blk % parts, o = blk / parts;
  const index_t q_end = (chunk + 1) * index_t(kBwdChunk) < M ? (chunk + 1) * index_t(kBwdChunk) : M;
  return {chunk, o, chunk * index_t(kBwdChunk), q_end};
}

// The sum of every thread's v over the block in a fixed order (a tree in red, kEpiThreads
// entries of shared memory), left in red[0]; every thread of the block calls it.
template <typename acc_t>
__device__ __forceinline__ void block_sum(acc_t* red, acc_t v) {
  red[threadIdx.x] = v;
  __syncthreads();
  for (int w = kEpiThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
}

// Backward, NCHW-like grad (lanes along x): block = a chunk of kBwdChunk consecutive elements of
// one channel o's N planes (q = n * P + p), so small maps (8x8: P = 64) still fill every thread;
// the block reduces its share of the bias gradient in shared memory, in a fixed order, into
// bias_partial[chunk * C + o]. The geometry depends only on the shapes: the same results on
// every GPU.
GANX_KERNEL_BOUND(upconv_epilogue_bwd_planes_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void GANX_BOUNDED(upconv_epilogue_bwd_planes_kernel)(EpilogueBwdArgs<scalar_t, acc_t> A, index_t parts) {
  GANX_SHARED(acc_t, red, [kEpiThreads]);
  const auto v = bwd_walk<index_t>(A, static_cast<index_t>(A.s));
  const auto b = planes_block(parts, v.M);
  acc_t sum = 0;
  for (index_t q = b.q_begin + threadIdx.x; q < b.q_end; q += kEpiThreads) {
    index_t n, y, x;
    v.locate(q, n, y, x);
    sum += epilogue_bwd_elem(A, v.gs, v.os, v.ps, v.s, v.slope, n, b.o, y, x);
  }
  if (A.bias_partial == nullptr) return;  // uniform over the block: no thread waits at a barrier alone
  block_sum(red, sum);
  if (threadIdx.x == 0) A.bias_partial[static_cast<int64_t>(b.chunk) * v.C + b.o] = red[0];
}

// Backward, channels_last grad (lanes along C, so a warp reads and writes contiguous memory):
// T = C * parts threads; thread t has channel o = t % C and handles the pixels m = t / C,
// t / C + parts, ... (element m * C + o in memory order, a stride of T), summing its own
// bias-gradient partial, bias_partial[t] = bias_partial[(t / C) * C + o].
GANX_KERNEL_BOUND(upconv_epilogue_bwd_rows_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void GANX_BOUNDED(upconv_epilogue_bwd_rows_kernel)(EpilogueBwdArgs<scalar_t, acc_t> A, index_t parts) {
  const auto v = bwd_walk<index_t>(A, static_cast<index_t>(A.s));
  const index_t t = static_cast<index_t>(blockIdx.x) * kEpiThreads + threadIdx.x;
  if (t >= v.C * parts) return;
  const index_t o = t % v.C;
  acc_t sum = 0;
  for (index_t m = t / v.C; m < v.M; m += parts) {
    index_t n, y, x;
    v.locate(m, n, y, x);
    sum += epilogue_bwd_elem(A, v.gs, v.os, v.ps, v.s, v.slope, n, o, y, x);
  }
  if (A.bias_partial != nullptr) A.bias_partial[t] = sum;
}

// The bias gradient from the backward's partials [parts][C]: block o sums column o in a fixed
// order (strided per thread, then a shared-memory tree) and rounds once to scalar_t.
GANX_KERNEL_BOUND(upconv_bias_grad_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t>
__global__ void GANX_BOUNDED(upconv_bias_grad_kernel)(const acc_t* __restrict__ partial, int64_t parts, int64_t C,
                                                      scalar_t* __restrict__ gb) {
  GANX_SHARED(acc_t, red, [kEpiThreads]);
  const int64_t o = blockIdx.x;
  acc_t sum = 0;
  for (int64_t k = threadIdx.x; k < parts; k += kEpiThreads) sum += partial[k * C + o];
  block_sum(red, sum);
  if (threadIdx.x == 0) gb[o] = static_cast<scalar_t>(red[0]);
}

// ---- the replicate form (1x1 kernels, docs/design.md section 3): A.phase[0] is the 1x1
// convolution at the input resolution (N x C x H x W). Nearest upsampling commutes with a
// pointwise map, so out = act(y + bias) replicated over each s x s block; backward, the map
// gets the block sums of act'(out) * grad (the 1x1 weight gradient then sums every replicated
// position). Work items are input-resolution elements.

// Forward: one thread per input-resolution element, in the output's memory order (lanes along
// j for NCHW, along C for channels_last, so each of the s*s stores of a warp covers one
// stretch of memory): bias + activation once, then its s x s block.
GANX_KERNEL_BOUND(upconv_replicate_fwd_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void GANX_BOUNDED(upconv_replicate_fwd_kernel)(EpilogueFwdArgs<scalar_t> A, bool channels_last) {
  const index_t s = A.s, C = static_cast<index_t>(A.C), H = static_cast<index_t>(A.H), W = static_cast<index_t>(A.W);
  const index_t total = static_cast<index_t>(A.N) * C * H * W;
  const Dims4<index_t> ps = dims_of<index_t>(A.ps), os = dims_of<index_t>(A.os);
  const acc_t slope = static_cast<acc_t>(A.slope);
  for (index_t idx = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<index_t>(gridDim.x) * blockDim.x) {
    index_t n, o, i, j, r = idx;
    if (channels_last) {
      o = r % C; r /= C;
      j = r % W; r /= W;
      i = r % H; n = r / H;
    } else {
      j = r % W; r /= W;
      i = r % H; r /= H;
      o = r % C; n = r / C;
    }
    acc_t v = static_cast<acc_t>(A.phase[0][n * ps.n + o * ps.c + i * ps.h + j * ps.w]);
    if (A.bias) v += static_cast<acc_t>(A.bias[o]);
    const scalar_t val = static_cast<scalar_t>(act_forward(A.act, v, slope));
    scalar_t* dst = A.out + n * os.n + o * os.c + s * i * os.h + s * j * os.w;
    for (index_t a = 0; a < s; ++a)
      for (index_t b = 0; b < s; ++b) dst[a * os.h + b * os.w] = val;
  }
}

// Backward of input-resolution element (n, o, i, j): the sum of d pre = act'(out) * grad over
// its block, in the order (a, b) row by row (the CPU twin's order: the same bits), rounded
// once to scalar_t and written to the map; returns the rounded value (what the bias gradient
// sums).
template <typename scalar_t, typename acc_t, typename index_t>
__device__ __forceinline__ acc_t replicate_bwd_elem(const EpilogueBwdArgs<scalar_t, acc_t>& A, const Dims4<index_t>& gs,
                                                    const Dims4<index_t>& os, const Dims4<index_t>& ps, index_t s,
                                                    acc_t slope, index_t n, index_t o, index_t i, index_t j) {
  acc_t sum = 0;
  for (index_t a = 0; a < s; ++a) {
    const index_t y = s * i + a;
    for (index_t b = 0; b < s; ++b) {
      const index_t x = s * j + b;
      const acc_t g = static_cast<acc_t>(A.grad[n * gs.n + o * gs.c + y * gs.h + x * gs.w]);
      sum += A.act == Act::None
                 ? g
                 : act_backward(A.act, g, static_cast<acc_t>(A.out[n * os.n + o * os.c + y * os.h + x * os.w]), slope);
    }
  }
  const scalar_t r = static_cast<scalar_t>(sum);
  A.phase[0][n * ps.n + o * ps.c + i * ps.h + j * ps.w] = r;
  return static_cast<acc_t>(r);
}

// Backward, NCHW-like grad: the planes kernel's geometry over input-resolution elements (a
// block = kBwdChunk consecutive elements of one channel's N planes, lanes along j), with its
// fixed-order shared-memory reduction into bias_partial[chunk * C + o].
GANX_KERNEL_BOUND(upconv_replicate_bwd_planes_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void GANX_BOUNDED(upconv_replicate_bwd_planes_kernel)(EpilogueBwdArgs<scalar_t, acc_t> A, index_t parts) {
  GANX_SHARED(acc_t, red, [kEpiThreads]);
  const auto v = bwd_walk<index_t>(A, index_t(1));
  const auto b = planes_block(parts, v.M);
  acc_t sum = 0;
  for (index_t q = b.q_begin + threadIdx.x; q < b.q_end; q += kEpiThreads) {
    index_t n, i, j;
    v.locate(q, n, i, j);
    sum += replicate_bwd_elem(A, v.gs, v.os, v.ps, v.s, v.slope, n, b.o, i, j);
  }
  if (A.bias_partial == nullptr) return;  // uniform over the block: no thread waits at a barrier alone
  block_sum(red, sum);
  if (threadIdx.x == 0) A.bias_partial[static_cast<int64_t>(b.chunk) * v.C + b.o] = red[0];
}

// Backward, channels_last grad (lanes along C): the rows kernel's geometry over
// input-resolution pixels; thread t keeps its own partial, bias_partial[t].
GANX_KERNEL_BOUND(upconv_replicate_bwd_rows_kernel, kEpiThreads);
template <typename scalar_t, typename acc_t, typename index_t>
__global__ void GANX_BOUNDED(upconv_replicate_bwd_rows_kernel)(EpilogueBwdArgs<scalar_t, acc_t> A, index_t parts) {
  const auto v = bwd_walk<index_t>(A, index_t(1));
  const index_t t = static_cast<index_t>(blockIdx.x) * kEpiThreads + threadIdx.x;
  if (t >= v.C * parts) return;
  const index_t o = t % v.C;
  acc_t sum = 0;
  for (index_t m = t / v.C; m < v.M; m += parts) {
    index_t n, i, j;
    v.locate(m, n, i, j);
    sum += replicate_bwd_elem(A, v.gs, v.os, v.ps, v.s, v.slope, n, o, i, j);
  }
  if (A.bias_partial != nullptr) A.bias_partial[t] = sum;
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

// Calls launch(index_t{}) with index_t = int32_t when every offset of the launch fits (fits32) and
// the 64-bit instantiation is not forced, else int64_t.
template <typename Launch>
inline void with_index_type(bool fits32, bool force_int64, const Launch& launch) {
  if (!force_int64 && fits32) {
    launch(int32_t{});
  } else {
    launch(int64_t{});
  }
}

template <typename scalar_t>
inline bool epilogue_fwd_fits_int32(const EpilogueFwdArgs<scalar_t>& A) {
  const int64_t Ho = A.H * A.s, Wo = A.W * A.s;
  return A.N * A.C * Ho * Wo < kIndex32Limit && max_offset(A.os, A.N, A.C, Ho, Wo) < kIndex32Limit &&
         max_offset(A.ps, A.N, A.C, A.H, A.W) < kIndex32Limit;
}

// force_int64: the 64-bit instantiation whatever the sizes (tests reach it with small tensors).
template <typename scalar_t, typename acc_t>
void launch_upconv_epilogue_fwd(const EpilogueFwdArgs<scalar_t>& A, bool channels_last, dev::Stream stream,
                                bool force_int64 = false) {
  const int64_t total = A.N * A.C * A.H * A.s * A.W * A.s;
  if (total == 0) return;
  with_index_type(epilogue_fwd_fits_int32(A), force_int64, [&](auto index) {
    dev::launch(upconv_epilogue_fwd_kernel<scalar_t, acc_t, decltype(index)>, dim3(grid_for(total)),
                dim3(kEpiThreads), 0, stream, A, channels_last);
  });
}

// How the backward epilogue splits its work (a function of the shapes alone): `rows` (lanes along
// C, for a channels_last grad) or planes; `parts` partial sums per channel, laid out [parts][C].
struct EpilogueBwdPlan {
  bool rows;
  int64_t parts;
  int64_t blocks;
};

inline EpilogueBwdPlan upconv_epilogue_bwd_plan(int64_t N, int64_t C, int64_t H, int64_t W, int64_t s,
                                                bool channels_last) {
  const int64_t M = N * H * s * W * s;  // elements per channel
  EpilogueBwdPlan p{channels_last, 1, 0};
  if (N * C * H * W == 0) return p;
  if (channels_last) {
    int64_t parts = (M + kBwdItems - 1) / kBwdItems;
    const int64_t cap = kBwdMaxThreads / C > 1 ? kBwdMaxThreads / C : 1;
    p.parts = parts < cap ? parts : cap;
    p.blocks = (C * p.parts + kEpiThreads - 1) / kEpiThreads;
  } else {
    p.parts = (M + kBwdChunk - 1) / kBwdChunk;
    p.blocks = C * p.parts;
  }
  return p;
}

template <typename scalar_t, typename acc_t>
inline bool epilogue_bwd_fits_int32(const EpilogueBwdArgs<scalar_t, acc_t>& A, const EpilogueBwdPlan& p) {
  const int64_t Ho = A.H * A.s, Wo = A.W * A.s;
  return A.N * A.C * Ho * Wo < kIndex32Limit && p.parts * A.C < kIndex32Limit &&
         max_offset(A.gs, A.N, A.C, Ho, Wo) < kIndex32Limit && max_offset(A.os, A.N, A.C, Ho, Wo) < kIndex32Limit &&
         max_offset(A.ps, A.N, A.C, A.H, A.W) < kIndex32Limit;
}

// The bias gradient from a backward's partials (a second, small kernel), when it wrote them.
template <typename scalar_t, typename acc_t>
void launch_upconv_bias_grad(const EpilogueBwdArgs<scalar_t, acc_t>& A, const EpilogueBwdPlan& p, scalar_t* bias_grad,
                             dev::Stream stream) {
  if (A.bias_partial == nullptr) return;
  dev::launch(upconv_bias_grad_kernel<scalar_t, acc_t>, dim3(static_cast<unsigned>(A.C)), dim3(kEpiThreads), 0, stream,
              static_cast<const acc_t*>(A.bias_partial), p.parts, A.C, bias_grad);
}

// Runs the backward epilogue with plan p (upconv_epilogue_bwd_plan of A's sizes). With a bias,
// A.bias_partial must hold p.parts * C accumulators (scratch) and bias_grad receives the C sums
// (a second, small kernel); without one both are null.
template <typename scalar_t, typename acc_t>
void launch_upconv_epilogue_bwd(const EpilogueBwdArgs<scalar_t, acc_t>& A, const EpilogueBwdPlan& p,
                                scalar_t* bias_grad, dev::Stream stream, bool force_int64 = false) {
  if (p.blocks == 0) return;
  const dim3 grid(static_cast<unsigned>(p.blocks)), block(kEpiThreads);
  with_index_type(epilogue_bwd_fits_int32(A, p), force_int64, [&](auto index) {
    using index_t = decltype(index);
    const index_t parts = static_cast<index_t>(p.parts);
    if (p.rows) {
      dev::launch(upconv_epilogue_bwd_rows_kernel<scalar_t, acc_t, index_t>, grid, block, 0, stream, A, parts);
    } else {
      dev::launch(upconv_epilogue_bwd_planes_kernel<scalar_t, acc_t, index_t>, grid, block, 0, stream, A, parts);
    }
  });
  launch_upconv_bias_grad(A, p, bias_grad, stream);
}

// The replicate form (A.phase[0]: the input-resolution map). Forward: one thread per
// input-resolution element.
template <typename scalar_t, typename acc_t>
void launch_upconv_replicate_fwd(const EpilogueFwdArgs<scalar_t>& A, bool channels_last, dev::Stream stream,
                                 bool force_int64 = false) {
  const int64_t total = A.N * A.C * A.H * A.W;
  if (total == 0) return;
  with_index_type(epilogue_fwd_fits_int32(A), force_int64, [&](auto index) {
    dev::launch(upconv_replicate_fwd_kernel<scalar_t, acc_t, decltype(index)>, dim3(grid_for(total)),
                dim3(kEpiThreads), 0, stream, A, channels_last);
  });
}

// The backward's split of the work: the phase epilogue's plan over input-resolution elements
// (elements per channel N * H * W).
inline EpilogueBwdPlan upconv_replicate_bwd_plan(int64_t N, int64_t C, int64_t H, int64_t W, bool channels_last) {
  return upconv_epilogue_bwd_plan(N, C, H, W, 1, channels_last);
}

// As launch_upconv_epilogue_bwd, with p = upconv_replicate_bwd_plan of A's sizes.
template <typename scalar_t, typename acc_t>
void launch_upconv_replicate_bwd(const EpilogueBwdArgs<scalar_t, acc_t>& A, const EpilogueBwdPlan& p,
                                 scalar_t* bias_grad, dev::Stream stream, bool force_int64 = false) {
  if (p.blocks == 0) return;
  const dim3 grid(static_cast<unsigned>(p.blocks)), block(kEpiThreads);
  with_index_type(epilogue_bwd_fits_int32(A, p), force_int64, [&](auto index) {
    using index_t = decltype(index);
    const index_t parts = static_cast<index_t>(p.parts);
    if (p.rows) {
      dev::launch(upconv_replicate_bwd_rows_kernel<scalar_t, acc_t, index_t>, grid, block, 0, stream, A, parts);
    } else {
      dev::launch(upconv_replicate_bwd_planes_kernel<scalar_t, acc_t, index_t>, grid, block, 0, stream, A, parts);
    }
  });
  launch_upconv_bias_grad(A, p, bias_grad, stream);
}

template <typename scalar_t>
void launch_fold_taps(const FoldArgs& F, const scalar_t* src, scalar_t* dst, dev::Stream stream) {
  const int64_t total = F.n0 * F.n1 * F.rows_dst * F.rows_dst;
  if (total == 0) return;
  dev::launch(fold_taps_kernel<scalar_t>, dim3(grid_for(total)), dim3(kEpiThreads), 0, stream, F, src, dst);
}

}  // namespace cuda
}  // namespace ganx
