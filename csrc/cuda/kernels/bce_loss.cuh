// CUDA kernels of the fused BCE losses (and of the critic losses: hinge, Wasserstein, another
// per-element functor on the same kernel) and their host launchers (raw pointers and sizes; the
// tensors, dtype dispatch and allocation are in csrc/cuda/bce_loss.cu). nvcc compiles this for
// the GPU; the tests compile it with g++ against the CUDA emulator (tests/emu).
//
// One launch reads the logits once and writes the gradient, the per-element loss (reduction
// "none") and the reduced loss / statistics. The discriminator's real and fake inputs are two
// segments of one index space, so both are handled by the same launch.
//
// Work split. The index space is cut into items of 16 bytes (V = 4 float, 8 half/bf16, 2 double
// elements; a segment's last item may be shorter). A segment whose arrays all start on a 16-byte
// boundary loads and stores its full items with one 16-byte access each; otherwise (a view at an
// odd offset, the fake half of a gradient buffer after an odd number of real logits) element by
// element. Both ways compute the same values in the same order: alignment changes the memory
// instructions, never a result. Threads stride over the items; the grid is
// min(ceil(items / (kThreads * kItemsPerThread)), kMaxBlocks): a function of the size alone,
// never of the GPU (an SM count in the grid would make the sums, and so the results, differ
// between GPU models). The cap, 4096 blocks (reached at 16M float32 logits), keeps the tail of a
// large launch short on every GPU: with 58-64 registers a thread, 4 blocks of 256 threads fit an
// SM, so an H100 PCIe (114 SMs) holds 456 blocks at once, an H100 SXM / H200 (132) 528, an A100
// (108) 432. A 1024-block grid was 2.25 waves (3 rounds, 75% busy) on the PCIe card and 2.37 (79%)
// on the A100; 4096 blocks are 9.0, 7.8 and 9.5 waves (>= 95% busy). The price is the last block
// summing 4096 x 6 partials from L2 (a few microseconds against ~40 us for 16M logits).
//
// Reduction (deterministic: the order is fixed, no floating-point atomics): each thread sums its
// items in index order; a block reduces its threads by warp shuffles then across warps in
// shared memory. One block (small inputs, the usual GAN case) finalises directly. Otherwise each
// block writes its partial sums and takes a ticket from an atomic counter; the block that takes
// the last ticket adds all partials in block order and finalises, in the same launch. The
// counter must be zero before the launch and is left zero after it. Accumulation is in float
// for float16/bfloat16/float32 and in double for double.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "bce_math.h"
#include "cuda/launch.cuh"

namespace ganx {
namespace cuda_bce {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kItemsPerThread = 4;  // items a thread handles before a second block is used
constexpr int kMaxBlocks = 4096;    // the grid never exceeds this (fixed: independent of the GPU)
constexpr int kSums = 6;            // per segment s: loss, statistic, count of logits > 0

// Accumulation type (at::opmath_type without ATen).
template <typename T>
struct Acc {
  using type = float;
};
template <>
struct Acc<double> {
  using type = double;
};

// Elements per 16-byte item.
template <typename T>
constexpr int vec_len() {
  return static_cast<int>(16 / sizeof(T));
}

__device__ __forceinline__ float d_exp(float x) { return expf(x); }
__device__ __forceinline__ double d_exp(double x) { return exp(x); }
__device__ __forceinline__ float d_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double d_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float d_log(float x) { return logf(x); }
__device__ __forceinline__ double d_log(double x) { return log(x); }

template <typename A>
__device__ __forceinline__ A logit_elem(A l, A cpos, A cneg, A& g, A& s) {
  const A e = d_exp(l < A(0) ? l : -l);  // exp(-|l|); NaN stays NaN
  return bce_elem(l, e, d_log1p(e), cpos, cneg, g, s);
}

// Per-element functors: (segment, element index, value) -> weighted loss, unscaled gradient g and
// statistic s (sigmoid for logits).

// Scalar targets (discriminator: one coefficient set per segment; generator: segment 0 only).
template <typename A>
struct LogitConst {
  A cpos[2], cneg[2], w[2];
  __device__ A operator()(int seg, int64_t, A l, A& g, A& s) const {
    // Selects, not cpos[seg]: a variable index would put the arrays in local memory.
    const A cp = seg ? cpos[1] : cpos[0], cn = seg ? cneg[1] : cneg[0], ws = seg ? w[1] : w[0];
    const A v = logit_elem(l, cp, cn, g, s);
    g *= ws;
    return ws * v;
  }
};

// The critic losses (hinge, Wasserstein; bce_math.h critic_elem), one coefficient set per segment
// (the generator: segment 0 only). The statistic is the score itself.
template <typename A>
struct CriticConst {
  A sign[2], margin[2];
  bool hinge;
  __device__ A operator()(int seg, int64_t, A l, A& g, A& s) const {
    const A sg = seg ? sign[1] : sign[0], mg = seg ? margin[1] : margin[0];
    s = l;
    return critic_elem(l, sg, mg, hinge, g);
  }
};

// BCE-with-logits: weight / pos_weight are null (absent), one value (stride 0) or input-shaped.
template <typename T, typename A>
struct LogitTensor {
  const T* t;
  const T* w;
  const T* pw;
  int64_t ws, ps;
  __device__ A operator()(int, int64_t i, A l, A& g, A& s) const {
    const A ti = static_cast<A>(t[i]);
    const A wi = w != nullptr ? static_cast<A>(w[i * ws]) : A(1);
    const A pwi = pw != nullptr ? static_cast<A>(pw[i * ps]) : A(1);
    const A v = logit_elem(l, pwi * ti, A(1) - ti, g, s);
    g *= wi;
    return wi * v;
  }
};

// BCE on probabilities. An input outside [0, 1] gives NaN (the CPU kernel raises; here that
// would need a device sync).
template <typename T, typename A>
struct ProbTensor {
  const T* t;
  const T* w;
  int64_t ws;
  __device__ A operator()(int, int64_t i, A p, A& g, A& s) const {
    const A ti = static_cast<A>(t[i]);
    const A wi = w != nullptr ? static_cast<A>(w[i * ws]) : A(1);
    A v = bce_prob_elem(p, ti, d_log(p), d_log1p(-p), g);
    const bool ok = p >= A(0) && p <= A(1);
    const A nan = std::numeric_limits<A>::quiet_NaN();
    v = ok ? v : nan;
    g = ok ? g * wi : nan;
    s = A(0);
    return wi * v;
  }
};

template <typename T>
struct Segment {
  const T* x;
  int64_t n;
  T* loss;   // per-element loss (reduction none) or null
  T* grad;   // gradient or null
  bool vec;  // x, loss, grad (and the functor's arrays) start on 16-byte boundaries
};

template <typename T, typename A>
struct Final {
  T* loss;      // reduced loss (scalar) or null
  float* stats;  // [acc_real, acc_fake, mean statistic real, fake] (sigmoid or score) or null
  int nseg;
  bool mean;
  int64_t n0, n1;
};

template <typename T, typename A>
__device__ void finalize(const A* s, const Final<T, A>& f) {
  const A n0 = static_cast<A>(f.n0), n1 = static_cast<A>(f.n1);
  if (f.loss != nullptr) {
    A total = f.mean ? s[0] / n0 : s[0];  // mean of nothing is NaN, like torch
    if (f.nseg == 2) total += f.mean ? s[3] / n1 : s[3];
    *f.loss = static_cast<T>(total);
  }
  if (f.stats != nullptr) {
    f.stats[0] = static_cast<float>(s[2] / n0);
    f.stats[1] = static_cast<float>((n1 - s[5]) / n1);
    f.stats[2] = static_cast<float>(s[1] / n0);
    f.stats[3] = static_cast<float>(s[4] / n1);
  }
}

// Fixed-order reduction of kSums values over the block (blockDim.x == kThreads): shuffles within
// each warp, then warp 0 over the warps' sums. The result is in thread 0's v. Ends with a barrier
// so that sh can be reused at once.
template <typename A>
__device__ void block_reduce(A (&v)[kSums], A (&sh)[kSums][kWarps]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < kSums; ++k) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], off);
  }
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < kSums; ++k) sh[k][warp] = v[k];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < kSums; ++k) {
      v[k] = lane < kWarps ? sh[k][lane] : A(0);
#pragma unroll
      for (int off = kWarps / 2; off > 0; off >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], off);
    }
  }
  __syncthreads();
}

// One 16-byte item as a value: loaded and stored with one 128-bit access (LDG.E.128 /
// STG.E.128; tests/test_sass.py checks the built module), p on a 16-byte boundary.
template <typename T>
struct alignas(16) Pack {
  T v[vec_len<T>()];
};

template <typename T>
__device__ __forceinline__ Pack<T> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T>*>(p);
}

// Through __stwb (st.global.wb.v4: the default write-back policy, spelled out): a plain 16-byte
// struct store was split into four 32-bit stores by the compiler in bce_kernel, where the
// element-by-element path sits beside it; the intrinsic's store cannot be split.
template <typename T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T>& v) {
  uint4 raw;
  memcpy(&raw, &v, sizeof(raw));
  __stwb(reinterpret_cast<uint4*>(p), raw);
}

// The m (< V, or any count when unaligned) elements of a partial item, one by one.
template <typename T>
__device__ __forceinline__ void load_elems(Pack<T>& dst, const T* p, int m) {
#pragma unroll
  for (int k = 0; k < vec_len<T>(); ++k) {  // constant indices: dst stays in registers
    if (k < m) dst.v[k] = p[k];
  }
}

template <typename T>
__device__ __forceinline__ void store_elems(T* p, const Pack<T>& src, int m) {
#pragma unroll
  for (int k = 0; k < vec_len<T>(); ++k) {
    if (k < m) p[k] = src.v[k];
  }
}

// The loss, gradient and sums of the first m elements of item x (elements j0, j0 + 1, ...),
// in index order: the vector and the element-by-element paths share it, so alignment never
// changes a result.
template <typename T, typename A, typename Elem>
__device__ __forceinline__ void item_math(const Elem& elem, int seg, int64_t j0, const Pack<T>& x, int m, A gs,
                                          Pack<T>& lo, Pack<T>& go, A& ls, A& ss, A& ps) {
#pragma unroll
  for (int k = 0; k < vec_len<T>(); ++k) {
    if (k < m) {
      const A xv = static_cast<A>(x.v[k]);
      A g, st;
      const A l = elem(seg, j0 + k, xv, g, st);
      lo.v[k] = static_cast<T>(l);
      go.v[k] = static_cast<T>(g * gs);
      ls += l;
      ss += st;
      ps += xv > A(0) ? A(1) : A(0);
    }
  }
}

GANX_KERNEL_BOUND(bce_kernel, kThreads);
template <typename T, typename A, typename Elem>
__global__ void GANX_BOUNDED(bce_kernel)(Segment<T> s0, Segment<T> s1, Elem elem, A gs0, A gs1, A* partials,
                                         unsigned* counter, Final<T, A> fin, bool reduce) {
  GANX_SHARED(A, sh, [kSums][kWarps]);
  GANX_SHARED(bool, last, [1]);
  constexpr int V = vec_len<T>();
  A v[kSums] = {};
  const int64_t items0 = (s0.n + V - 1) / V;
  const int64_t items = items0 + (s1.n + V - 1) / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t it = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; it < items; it += stride) {
    const bool second = it >= items0;
    const int seg = second ? 1 : 0;
    // The segment's fields by value (a reference to s0 or s1 would put both in local memory).
    const T* sx = second ? s1.x : s0.x;
    T* sloss = second ? s1.loss : s0.loss;
    T* sgrad = second ? s1.grad : s0.grad;
    const int64_t sn = second ? s1.n : s0.n;
    const bool vec = second ? s1.vec : s0.vec;
    const int64_t j0 = (second ? it - items0 : it) * V;
    const int m = sn - j0 < V ? static_cast<int>(sn - j0) : V;
    const A gs = second ? gs1 : gs0;
    A ls = A(0), ss = A(0), ps = A(0);
    Pack<T> x, lo, go;
    if (vec && m == V) {  // a full aligned item: 128-bit loads and stores
      x = load_pack(sx + j0);
      item_math(elem, seg, j0, x, V, gs, lo, go, ls, ss, ps);
      if (sloss != nullptr) store_pack(sloss + j0, lo);
      if (sgrad != nullptr) store_pack(sgrad + j0, go);
    } else {
      load_elems(x, sx + j0, m);
      item_math(elem, seg, j0, x, m, gs, lo, go, ls, ss, ps);
      if (sloss != nullptr) store_elems(sloss + j0, lo, m);
      if (sgrad != nullptr) store_elems(sgrad + j0, go, m);
    }
    if (second) {  // constant indices keep v in registers
      v[3] += ls; v[4] += ss; v[5] += ps;
    } else {
      v[0] += ls; v[1] += ss; v[2] += ps;
    }
  }
  if (!reduce) return;  // uniform over the grid
  block_reduce(v, sh);
  if (gridDim.x == 1) {
    if (threadIdx.x == 0) finalize(v, fin);
    return;
  }
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < kSums; ++k) partials[static_cast<int64_t>(blockIdx.x) * kSums + k] = v[k];
    __threadfence();  // the partials are visible to every block before the ticket is
    last[0] = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last[0]) return;  // uniform over the block
  __threadfence();
  A w[kSums] = {};
  for (int b = threadIdx.x; b < static_cast<int>(gridDim.x); b += kThreads) {
#pragma unroll
    for (int k = 0; k < kSums; ++k) w[k] += __ldcg(partials + static_cast<int64_t>(b) * kSums + k);  // from L2
  }
  block_reduce(w, sh);
  if (threadIdx.x == 0) {
    finalize(w, fin);
    *counter = 0u;  // ready for the next launch
  }
}

// The backward of a reduced loss: grad *= *scale in place, the incoming gradient read on the
// device (no host sync). When it is exactly 1 (loss.backward()) every thread returns at once and
// no gradient byte moves: forward + backward then read the logits once and write the gradient
// once. The product is rounded once to T, like `grad * scale` in ATen.
GANX_KERNEL_BOUND(bce_scale_kernel, kThreads);
template <typename T, typename A>
__global__ void GANX_BOUNDED(bce_scale_kernel)(T* g, int64_t n, const T* scale, bool vec) {
  const A c = static_cast<A>(*scale);
  if (c == A(1)) return;  // uniform over the grid
  constexpr int V = vec_len<T>();
  const int64_t items = (n + V - 1) / V;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t it = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; it < items; it += stride) {
    const int64_t j0 = it * V;
    const int m = n - j0 < V ? static_cast<int>(n - j0) : V;
    Pack<T> v;
    if (vec && m == V) {
      v = load_pack(g + j0);
    } else {
      load_elems(v, g + j0, m);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) v.v[k] = static_cast<T>(static_cast<A>(v.v[k]) * c);
    if (vec && m == V) {
      store_pack(g + j0, v);
    } else {
      store_elems(g + j0, v, m);
    }
  }
}

// ------------------------------------------------------------------ host side

// Blocks of a launch over n0 + n1 elements of type T (at most max_blocks; kMaxBlocks unless a
// test lowers it to reach the grid-stride loop and the multi-block reduction with small inputs).
template <typename T>
inline int grid_blocks(int64_t n0, int64_t n1, int max_blocks = kMaxBlocks) {
  constexpr int V = vec_len<T>();
  const int64_t items = (n0 + V - 1) / V + (n1 + V - 1) / V;
  const int64_t per_block = static_cast<int64_t>(kThreads) * kItemsPerThread;
  int64_t b = (items + per_block - 1) / per_block;
  b = b < 1 ? 1 : b;
  return static_cast<int>(b < max_blocks ? b : max_blocks);
}

inline bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Workspace of a multi-block reduction: blocks * kSums accumulators, then the counter.
template <typename T>
inline size_t workspace_bytes(int blocks) {
  return blocks > 1 ? static_cast<size_t>(blocks) * kSums * sizeof(typename Acc<T>::type) + 16 : 0;
}

// The scalar-target functor from double coefficients (bce_math.h), rounded once.
template <typename A>
inline LogitConst<A> logit_const(const TargetCoefs& c0, const TargetCoefs& c1) {
  return LogitConst<A>{{static_cast<A>(c0.cpos), static_cast<A>(c1.cpos)},
                       {static_cast<A>(c0.cneg), static_cast<A>(c1.cneg)},
                       {static_cast<A>(c0.w), static_cast<A>(c1.w)}};
}

template <typename A>
inline CriticConst<A> critic_const(const CriticCoefs& k0, const CriticCoefs& k1) {
  return CriticConst<A>{{static_cast<A>(k0.sign), static_cast<A>(k1.sign)},
                        {static_cast<A>(k0.margin), static_cast<A>(k1.margin)},
                        k0.hinge};
}

// Launches the loss over s0 (and s1) with gradient scales gs0, gs1 (bce_grad_scale). s.vec is
// decided here from the pointers (the functors' target / weight arrays are read element by
// element). workspace: workspace_bytes<T>(blocks) bytes whose last 16 hold a zero counter, or null when
// blocks == 1 or nothing is reduced.
template <typename T, typename Elem>
inline void launch_bce(Segment<T> s0, Segment<T> s1, const Elem& elem, double gs0, double gs1,
                       Final<T, typename Acc<T>::type> fin, int blocks, void* workspace,
                       dev::Stream stream) {
  using A = typename Acc<T>::type;
  if (s0.n + s1.n == 0) return;  // callers fill the reductions of empty inputs
  const bool reduce = fin.loss != nullptr || fin.stats != nullptr;
  s0.vec = aligned16(s0.x) && aligned16(s0.loss) && aligned16(s0.grad);
  s1.vec = aligned16(s1.x) && aligned16(s1.loss) && aligned16(s1.grad);
  A* partials = nullptr;
  unsigned* counter = nullptr;
  if (reduce && blocks > 1) {
    partials = static_cast<A*>(workspace);
    counter = reinterpret_cast<unsigned*>(static_cast<char*>(workspace) + workspace_bytes<T>(blocks) - 16);
  }
  dev::launch(bce_kernel<T, A, Elem>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), 0, stream, s0, s1, elem,
              static_cast<A>(gs0), static_cast<A>(gs1), partials, counter, fin, reduce);
}

// grad[0, n) *= *scale on the device (bce_scale_kernel); scale: one element of type T.
template <typename T>
inline void launch_bce_scale(T* grad, int64_t n, const T* scale, dev::Stream stream, int max_blocks = kMaxBlocks) {
  using A = typename Acc<T>::type;
  if (n == 0) return;
  dev::launch(bce_scale_kernel<T, A>, dim3(static_cast<unsigned>(grid_blocks<T>(n, 0, max_blocks))), dim3(kThreads), 0,
              stream, grad, n, scale, aligned16(grad));
}

}  // namespace cuda_bce
}  // namespace ganx
