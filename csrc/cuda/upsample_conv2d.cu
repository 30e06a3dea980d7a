// CUDA kernels of upsample_conv2d: phase-decomposed, shared-memory tiled direct
// convolutions (correct first; the tensor-core implicit GEMM is the GPU performance work).
//
// Forward: block = (16x16 positions of one output phase (a, b), 8 output channels, one image).
// Input channels are staged 8 at a time in shared memory together with the matching slice
// of the folded T x T phase kernels; every thread accumulates 8 outputs in fp32 (fp64 for
// double) and applies bias + activation before its single store.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ganx.h"

namespace ganx {
namespace {

constexpr int kTile = 16;                   // phase positions per block side
constexpr int kThreads = kTile * kTile;
constexpr int kChanBlk = 8;                 // channels produced per thread
constexpr int kChanChunk = 8;               // channels staged in shared memory per step
constexpr int kHalo = kTile + kMaxTaps - 1;
constexpr int kTaps2 = kMaxTaps * kMaxTaps;
constexpr int64_t kMaxGridYZ = 65535;

struct Strides4 {
  int64_t n, c, h, w;
};
struct PhaseOffsets {
  int d0[kMaxScale];
  int taps[kMaxScale];  // real taps of each phase (<= T): padding taps must never read x
};

Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

PhaseOffsets offsets_of(const UpConvGeometry& g) {
  PhaseOffsets p{};
  for (int64_t a = 0; a < g.s; ++a) {
    p.d0[a] = static_cast<int>(g.d0[a]);
    p.taps[a] = static_cast<int>(g.taps[a]);
  }
  return p;
}

template <typename acc_t>
__device__ __forceinline__ acc_t apply_act(acc_t v, int act, acc_t slope) {
  switch (act) {
    case 1: return v < acc_t(0) ? acc_t(0) : v;      // NaN passes through like torch.relu
    case 2: return v < acc_t(0) ? v * slope : v;
    case 3: return tanh(v);
    default: return v;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) upconv_fwd_kernel(
    const scalar_t* __restrict__ x, Strides4 xs, const acc_t* __restrict__ wf,
    const scalar_t* __restrict__ bias, scalar_t* __restrict__ out, Strides4 os, int n_base, int Ci,
    int H, int W, int Co, int s, int T, PhaseOffsets ph, int tiles_w, int act, acc_t slope) {
  __shared__ acc_t x_sh[kChanChunk][kHalo][kHalo];
  __shared__ acc_t w_sh[kChanBlk][kChanChunk][kTaps2];

  const int tid = threadIdx.y * kTile + threadIdx.x;
  const int ty0 = (blockIdx.x / tiles_w) * kTile;
  const int tx0 = (blockIdx.x % tiles_w) * kTile;
  const int co0 = blockIdx.y * kChanBlk;
  const int n = n_base + blockIdx.z / (s * s);
  const int ab = blockIdx.z % (s * s);
  const int a = ab / s, b = ab % s;
  const int da = ph.d0[a], db = ph.d0[b];
  const int ta = ph.taps[a], tb = ph.taps[b];
  const int rows = kTile + T - 1;
  const int TT = T * T;
  const acc_t* wf_ab = wf + static_cast<int64_t>(ab) * Co * Ci * TT;
  const scalar_t* xn = x + static_cast<int64_t>(n) * xs.n;

  acc_t acc[kChanBlk];
#pragma unroll
  for (int o = 0; o < kChanBlk; ++o) acc[o] = acc_t(0);

  for (int c0 = 0; c0 < Ci; c0 += kChanChunk) {
    for (int idx = tid; idx < kChanChunk * rows * rows; idx += kThreads) {
      const int cc = idx / (rows * rows), r = (idx / rows) % rows, q = idx % rows;
      const int ci = c0 + cc, iy = ty0 + da + r, ix = tx0 + db + q;
      acc_t v = acc_t(0);
      if (ci < Ci && iy >= 0 && iy < H && ix >= 0 && ix < W && r < kTile + ta - 1 && q < kTile + tb - 1)
        v = static_cast<acc_t>(xn[ci * xs.c + iy * xs.h + ix * xs.w]);
      x_sh[cc][r][q] = v;
    }
    for (int idx = tid; idx < kChanBlk * kChanChunk * TT; idx += kThreads) {
      const int o = idx / (kChanChunk * TT), cc = (idx / TT) % kChanChunk, t = idx % TT;
      const int co = co0 + o, ci = c0 + cc;
      w_sh[o][cc][t] = (co < Co && ci < Ci) ? wf_ab[(static_cast<int64_t>(co) * Ci + ci) * TT + t] : acc_t(0);
    }
    __syncthreads();
    const int cmax = min(kChanChunk, Ci - c0);
    for (int cc = 0; cc < cmax; ++cc) {
      for (int t = 0; t < ta; ++t) {
        for (int u = 0; u < tb; ++u) {
          const acc_t xv = x_sh[cc][threadIdx.y + t][threadIdx.x + u];
#pragma unroll
          for (int o = 0; o < kChanBlk; ++o) acc[o] += w_sh[o][cc][t * T + u] * xv;
        }
      }
    }
    __syncthreads();
  }

  const int i = ty0 + threadIdx.y, j = tx0 + threadIdx.x;
  if (i >= H || j >= W) return;
  const int64_t base = static_cast<int64_t>(n) * os.n + static_cast<int64_t>(i * s + a) * os.h +
                       static_cast<int64_t>(j * s + b) * os.w;
#pragma unroll
  for (int o = 0; o < kChanBlk; ++o) {
    const int co = co0 + o;
    if (co < Co) {
      acc_t v = acc[o];
      if (bias != nullptr) v += static_cast<acc_t>(bias[co]);
      out[base + co * os.c] = static_cast<scalar_t>(apply_act(v, act, slope));
    }
  }
}

// grad_x[n, c, y, x] = sum_{a,b} sum_{o,t,u} Wf_ab[o, c, t, u] * gpre[n, o, s*i + a, s*j + b]
// with i = y - d0[a] - t, j = x - d0[b] - u inside [0, H) x [0, W): the adjoint of the
// forward's per-phase correlation. Same tiling as the forward with the roles of the
// channels swapped; the gradient patch of each phase is staged in shared memory.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) upconv_grad_x_kernel(
    const scalar_t* __restrict__ gpre, Strides4 gs, const acc_t* __restrict__ wf,
    scalar_t* __restrict__ gx, Strides4 xs, int n_base, int Ci, int H, int W, int Co, int s, int T,
    PhaseOffsets ph, int tiles_w) {
  __shared__ acc_t g_sh[kChanChunk][kHalo][kHalo];
  __shared__ acc_t w_sh[kChanChunk][kChanBlk][kTaps2];

  const int tid = threadIdx.y * kTile + threadIdx.x;
  const int y0 = (blockIdx.x / tiles_w) * kTile;
  const int x0 = (blockIdx.x % tiles_w) * kTile;
  const int c0 = blockIdx.y * kChanBlk;
  const int n = n_base + blockIdx.z;
  const int rows = kTile + T - 1;
  const int TT = T * T;
  const scalar_t* gn = gpre + static_cast<int64_t>(n) * gs.n;

  acc_t acc[kChanBlk];
#pragma unroll
  for (int k = 0; k < kChanBlk; ++k) acc[k] = acc_t(0);

  for (int ab = 0; ab < s * s; ++ab) {
    const int a = ab / s, b = ab % s;
    const int da = ph.d0[a], db = ph.d0[b];
    const int ta = ph.taps[a], tb = ph.taps[b];
    const acc_t* wf_ab = wf + static_cast<int64_t>(ab) * Co * Ci * TT;
    // patch row r holds phase row i = y0 - da - (T - 1) + r
    const int i0 = y0 - da - (T - 1), j0 = x0 - db - (T - 1);
    for (int o0 = 0; o0 < Co; o0 += kChanChunk) {
      for (int idx = tid; idx < kChanChunk * rows * rows; idx += kThreads) {
        const int oo = idx / (rows * rows), r = (idx / rows) % rows, q = idx % rows;
        const int o = o0 + oo, i = i0 + r, j = j0 + q;
        acc_t v = acc_t(0);
        if (o < Co && i >= 0 && i < H && j >= 0 && j < W)
          v = static_cast<acc_t>(gn[o * gs.c + static_cast<int64_t>(i * s + a) * gs.h +
                                    static_cast<int64_t>(j * s + b) * gs.w]);
        g_sh[oo][r][q] = v;
      }
      for (int idx = tid; idx < kChanChunk * kChanBlk * TT; idx += kThreads) {
        const int oo = idx / (kChanBlk * TT), k = (idx / TT) % kChanBlk, t = idx % TT;
        const int o = o0 + oo, c = c0 + k;
        w_sh[oo][k][t] = (o < Co && c < Ci) ? wf_ab[(static_cast<int64_t>(o) * Ci + c) * TT + t] : acc_t(0);
      }
      __syncthreads();
      const int omax = min(kChanChunk, Co - o0);
      for (int oo = 0; oo < omax; ++oo) {
        for (int t = 0; t < ta; ++t) {
          for (int u = 0; u < tb; ++u) {
            const acc_t gv = g_sh[oo][threadIdx.y + T - 1 - t][threadIdx.x + T - 1 - u];
#pragma unroll
            for (int k = 0; k < kChanBlk; ++k) acc[k] += w_sh[oo][k][t * T + u] * gv;
          }
        }
      }
      __syncthreads();
    }
  }

  const int y = y0 + threadIdx.y, xx = x0 + threadIdx.x;
  if (y >= H || xx >= W) return;
  const int64_t base = static_cast<int64_t>(n) * xs.n + static_cast<int64_t>(y) * xs.h + static_cast<int64_t>(xx) * xs.w;
#pragma unroll
  for (int k = 0; k < kChanBlk; ++k) {
    const int c = c0 + k;
    if (c < Ci) gx[base + c * xs.c] = static_cast<scalar_t>(acc[k]);
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v, acc_t* sh) {
  // Fixed shuffle tree + fixed smem order: the result does not depend on timing.
  for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  acc_t total = acc_t(0);
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += sh[w];
  __syncthreads();
  return total;
}

// grad_Wf_ab[o, c, t, u] = sum_{n,i,j} gpre[n, o, s*i+a, s*j+b] * x[n, c, i+d0[a]+t, j+d0[b]+u]:
// one block per (phase, o, c), a deterministic block reduction per tap.
template <typename scalar_t, typename acc_t, int T>
__global__ void __launch_bounds__(kThreads) upconv_grad_wf_kernel(
    const scalar_t* __restrict__ gpre, Strides4 gs, const scalar_t* __restrict__ x, Strides4 xs,
    acc_t* __restrict__ gwf, int N, int Ci, int H, int W, int Co, int s, PhaseOffsets ph) {
  __shared__ acc_t red[kThreads / 32];
  const int64_t blk = blockIdx.x;
  const int c = static_cast<int>(blk % Ci);
  const int o = static_cast<int>((blk / Ci) % Co);
  const int ab = static_cast<int>(blk / (static_cast<int64_t>(Ci) * Co));
  const int a = ab / s, b = ab % s;
  const int da = ph.d0[a], db = ph.d0[b];
  const int ta = ph.taps[a], tb = ph.taps[b];

  acc_t acc[T * T];
#pragma unroll
  for (int t = 0; t < T * T; ++t) acc[t] = acc_t(0);

  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t total = static_cast<int64_t>(N) * HW;
  for (int64_t idx = threadIdx.x; idx < total; idx += kThreads) {
    const int64_t n = idx / HW;
    const int i = static_cast<int>((idx / W) % H), j = static_cast<int>(idx % W);
    const acc_t g = static_cast<acc_t>(gpre[n * gs.n + o * gs.c + static_cast<int64_t>(i * s + a) * gs.h +
                                            static_cast<int64_t>(j * s + b) * gs.w]);
    const scalar_t* xc = x + n * xs.n + static_cast<int64_t>(c) * xs.c;
#pragma unroll
    for (int t = 0; t < T; ++t) {
      const int iy = i + da + t;
      if (t >= ta || iy < 0 || iy >= H) continue;  // padding taps keep a zero gradient
#pragma unroll
      for (int u = 0; u < T; ++u) {
        const int ix = j + db + u;
        if (u >= tb || ix < 0 || ix >= W) continue;
        acc[t * T + u] += g * static_cast<acc_t>(xc[iy * xs.h + ix * xs.w]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < T * T; ++t) {
    const acc_t v = block_sum(acc[t], red);
    if (threadIdx.x == 0) gwf[blk * (T * T) + t] = v;
  }
}

int act_code(Act a) { return static_cast<int>(a); }

at::Tensor phase_forward_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                              const UpConvGeometry& g, Act act, double slope, int64_t c_out,
                              at::ScalarType acc_type) {
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor wf = fold_weight(weight, g, acc_type);
  const int64_t N = x.size(0), Ci = x.size(1), H = x.size(2), W = x.size(3), Co = c_out;
  const auto fmt = x.suggest_memory_format();
  auto out = at::empty({N, Co, H * g.s, W * g.s}, x.options().memory_format(fmt));
  if (out.numel() == 0) return out;
  TORCH_CHECK(Ci < INT32_MAX && Co < INT32_MAX && N < INT32_MAX && H * W < INT32_MAX,
              "upsample_conv2d: channel, batch and spatial sizes must fit in 32 bits");
  const at::Tensor b = bias.defined() ? bias.contiguous() : at::Tensor();
  const int tiles_h = static_cast<int>((H + kTile - 1) / kTile), tiles_w = static_cast<int>((W + kTile - 1) / kTile);
  const int64_t co_blocks = (Co + kChanBlk - 1) / kChanBlk;
  TORCH_CHECK(co_blocks <= kMaxGridYZ, "upsample_conv2d: too many output channels (", Co, ")");
  const int64_t per_image = g.s * g.s;
  const int64_t n_chunk = std::max<int64_t>(1, kMaxGridYZ / per_image);
  auto stream = at::cuda::getCurrentCUDAStream();
  const dim3 block(kTile, kTile);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upsample_conv2d_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    TORCH_CHECK(wf.scalar_type() == c10::CppTypeToScalarType<acc_t>::value && wf.is_contiguous(),
                "upsample_conv2d: internal error: folded weight has the wrong dtype/layout");
    for (int64_t n0 = 0; n0 < N; n0 += n_chunk) {
      const int64_t nn = std::min(n_chunk, N - n0);
      const dim3 grid(static_cast<unsigned>(tiles_h * tiles_w), static_cast<unsigned>(co_blocks),
                      static_cast<unsigned>(nn * per_image));
      upconv_fwd_kernel<scalar_t, acc_t><<<grid, block, 0, stream>>>(
          x.data_ptr<scalar_t>(), strides_of(x), wf.data_ptr<acc_t>(),
          b.defined() ? b.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(), strides_of(out),
          static_cast<int>(n0), static_cast<int>(Ci), static_cast<int>(H), static_cast<int>(W),
          static_cast<int>(Co), static_cast<int>(g.s), static_cast<int>(g.T), offsets_of(g), tiles_w,
          act_code(act), static_cast<acc_t>(slope));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

template <typename scalar_t, typename acc_t, int T>
void launch_grad_wf(const at::Tensor& gpre, const at::Tensor& x, at::Tensor& gwf, const UpConvGeometry& g,
                    cudaStream_t stream) {
  const int64_t blocks = g.s * g.s * x.size(1) * gpre.size(1);
  TORCH_CHECK(blocks < INT32_MAX, "upsample_conv2d_backward: too many weight entries");
  upconv_grad_wf_kernel<scalar_t, acc_t, T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
      gpre.data_ptr<scalar_t>(), strides_of(gpre), x.data_ptr<scalar_t>(), strides_of(x),
      gwf.data_ptr<acc_t>(), static_cast<int>(x.size(0)), static_cast<int>(x.size(1)),
      static_cast<int>(x.size(2)), static_cast<int>(x.size(3)), static_cast<int>(gpre.size(1)),
      static_cast<int>(g.s), offsets_of(g));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> phase_backward_cuda(const at::Tensor& gpre, const at::Tensor& x,
                                                       const at::Tensor& weight, const UpConvGeometry& g,
                                                       bool need_x, bool need_w, at::ScalarType acc_type) {
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor wf = fold_weight(weight, g, acc_type);
  const int64_t N = x.size(0), Ci = x.size(1), H = x.size(2), W = x.size(3), Co = gpre.size(1);
  TORCH_CHECK(Ci < INT32_MAX && Co < INT32_MAX && N < INT32_MAX && H * W < INT32_MAX,
              "upsample_conv2d_backward: channel, batch and spatial sizes must fit in 32 bits");
  at::Tensor gx, gwf;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "upsample_conv2d_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    TORCH_CHECK(wf.scalar_type() == c10::CppTypeToScalarType<acc_t>::value && wf.is_contiguous(),
                "upsample_conv2d_backward: internal error: folded weight has the wrong dtype/layout");
    if (need_x) {
      gx = at::empty_like(x, at::MemoryFormat::Preserve);
      const int tiles_h = static_cast<int>((H + kTile - 1) / kTile), tiles_w = static_cast<int>((W + kTile - 1) / kTile);
      const int64_t c_blocks = (Ci + kChanBlk - 1) / kChanBlk;
      TORCH_CHECK(c_blocks <= kMaxGridYZ, "upsample_conv2d_backward: too many input channels (", Ci, ")");
      for (int64_t n0 = 0; n0 < N; n0 += kMaxGridYZ) {
        const int64_t nn = std::min(kMaxGridYZ, N - n0);
        const dim3 grid(static_cast<unsigned>(tiles_h * tiles_w), static_cast<unsigned>(c_blocks),
                        static_cast<unsigned>(nn));
        upconv_grad_x_kernel<scalar_t, acc_t><<<grid, dim3(kTile, kTile), 0, stream>>>(
            gpre.data_ptr<scalar_t>(), strides_of(gpre), wf.data_ptr<acc_t>(), gx.data_ptr<scalar_t>(),
            strides_of(gx), static_cast<int>(n0), static_cast<int>(Ci), static_cast<int>(H),
            static_cast<int>(W), static_cast<int>(Co), static_cast<int>(g.s), static_cast<int>(g.T),
            offsets_of(g), tiles_w);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    if (need_w) {
      gwf = at::empty({g.s, g.s, Co, Ci, g.T, g.T}, x.options().dtype(wf.scalar_type()));
      switch (g.T) {
        case 1: launch_grad_wf<scalar_t, acc_t, 1>(gpre, x, gwf, g, stream); break;
        case 2: launch_grad_wf<scalar_t, acc_t, 2>(gpre, x, gwf, g, stream); break;
        case 3: launch_grad_wf<scalar_t, acc_t, 3>(gpre, x, gwf, g, stream); break;
        case 4: launch_grad_wf<scalar_t, acc_t, 4>(gpre, x, gwf, g, stream); break;
        case 5: launch_grad_wf<scalar_t, acc_t, 5>(gpre, x, gwf, g, stream); break;
        default: TORCH_CHECK(false, "upsample_conv2d_backward: unsupported phase kernel size ", g.T);
      }
    }
  });
  return {gx, need_w ? unfold_weight_grad(gwf, g) : at::Tensor()};
}

}  // namespace

TORCH_LIBRARY_IMPL(ganx, CUDA, m) {
  m.impl("upsample_conv2d", &upsample_conv2d_impl<&phase_forward_cuda>);
  m.impl("upsample_conv2d_backward", &upsample_conv2d_backward_impl<&phase_backward_cuda>);
  m.impl("conv_transpose2d_4s2", &conv_transpose2d_4s2_impl<&phase_forward_cuda>);
  m.impl("conv_transpose2d_4s2_backward", &conv_transpose2d_4s2_backward_impl<&phase_backward_cuda>);
}

}  // namespace ganx
