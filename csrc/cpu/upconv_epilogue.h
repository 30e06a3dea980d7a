// CPU twins of the upsample-conv glue kernels (csrc/cuda/kernels/upconv_epilogue.cuh): the
// same arguments and the same arithmetic (fp32 for half inputs, bias added and activation
// applied in the accumulation type), on raw pointers, one work unit per call so the caller
// picks the threading (at::parallel_for in cpu/upsample_conv2d.cpp, a plain loop in the
// emulator tests). No torch dependency.
//
// Two traversals of the same math: per (n, o) plane, rows of W contiguous elements (NCHW), or
// per (n, i) input row with the channels innermost (channels_last), so that the inner loop walks
// memory with unit stride in either layout. Two forms: the phase epilogue (interleave s*s phase
// maps) and the replicate form of 1x1 kernels (one map at the input resolution, each value
// written to its s x s block; backward: the block sums).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../upconv_epilogue.h"

namespace ganx {
namespace cpu {

template <typename scalar_t>
using acc_of = std::conditional_t<std::is_same<scalar_t, double>::value, double, float>;

// The activation over a contiguous buffer, element by element; the CPU kernels pass a
// vectorised one instead (same results up to the vector math's rounding).
struct ScalarRowAct {
  template <typename acc_t>
  void operator()(acc_t* v, int64_t len, Act act, acc_t slope) const {
    for (int64_t j = 0; j < len; ++j) v[j] = act_forward(act, v[j], slope);
  }
};

// Plane (n, o): out[n, o, s*i + a, s*j + b] = act(phase[a*s + b][n, o, i, j] + bias[o]).
// tmp: W accumulation-type elements of scratch.
template <typename scalar_t, typename RowAct>
void epilogue_fwd_plane(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t o, acc_of<scalar_t>* tmp,
                        const RowAct& row_act) {
  using acc_t = acc_of<scalar_t>;
  const acc_t b = A.bias ? static_cast<acc_t>(A.bias[o]) : acc_t(0);
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  for (int64_t i = 0; i < A.H; ++i) {
    for (int64_t a = 0; a < s; ++a) {
      scalar_t* dst_row = A.out + n * A.os.n + o * A.os.c + (s * i + a) * A.os.h;
      for (int64_t c = 0; c < s; ++c) {
        const scalar_t* src = A.phase[a * s + c] + n * A.ps.n + o * A.ps.c + i * A.ps.h;
        if (A.ps.w == 1) {
          for (int64_t j = 0; j < A.W; ++j) tmp[j] = static_cast<acc_t>(src[j]) + b;
        } else {
          for (int64_t j = 0; j < A.W; ++j) tmp[j] = static_cast<acc_t>(src[j * A.ps.w]) + b;
        }
        row_act(tmp, A.W, A.act, slope);
        scalar_t* dst = dst_row + c * A.os.w;
        const int64_t step = s * A.os.w;
        if (step == 1) {
          for (int64_t j = 0; j < A.W; ++j) dst[j] = static_cast<scalar_t>(tmp[j]);
        } else {
          for (int64_t j = 0; j < A.W; ++j) dst[j * step] = static_cast<scalar_t>(tmp[j]);
        }
      }
    }
  }
}

// Input row (n, i), all channels innermost. tmp: C elements of scratch.
template <typename scalar_t, typename RowAct>
void epilogue_fwd_row(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t i, acc_of<scalar_t>* tmp,
                      const RowAct& row_act) {
  using acc_t = acc_of<scalar_t>;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  for (int64_t a = 0; a < s; ++a) {
    for (int64_t j = 0; j < A.W; ++j) {
      for (int64_t c = 0; c < s; ++c) {
        const scalar_t* src = A.phase[a * s + c] + n * A.ps.n + i * A.ps.h + j * A.ps.w;
        for (int64_t o = 0; o < A.C; ++o)
          tmp[o] = static_cast<acc_t>(src[o * A.ps.c]) + (A.bias ? static_cast<acc_t>(A.bias[o]) : acc_t(0));
        row_act(tmp, A.C, A.act, slope);
        scalar_t* dst = A.out + n * A.os.n + (s * i + a) * A.os.h + (s * j + c) * A.os.w;
        for (int64_t o = 0; o < A.C; ++o) dst[o * A.os.c] = static_cast<scalar_t>(tmp[o]);
      }
    }
  }
}

// Plane (n, o) of the backward: phase[a*s + b][n, o, i, j] = act'(out) * grad at
// (n, o, s*i + a, s*j + b); returns the plane's sum of d pre (the bias gradient's share).
template <typename scalar_t>
double epilogue_bwd_plane(const EpilogueBwdArgs<scalar_t, double>& A, int64_t n, int64_t o) {
  using acc_t = acc_of<scalar_t>;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  double total = 0;
  for (int64_t i = 0; i < A.H; ++i) {
    acc_t row_sum = 0;  // one row in the accumulation type, rows in float64
    for (int64_t a = 0; a < s; ++a) {
      const int64_t y = s * i + a;
      const scalar_t* g_row = A.grad + n * A.gs.n + o * A.gs.c + y * A.gs.h;
      const scalar_t* y_row = A.act != Act::None ? A.out + n * A.os.n + o * A.os.c + y * A.os.h : nullptr;
      for (int64_t c = 0; c < s; ++c) {
        scalar_t* dst = A.phase[a * s + c] + n * A.ps.n + o * A.ps.c + i * A.ps.h;
        for (int64_t j = 0; j < A.W; ++j) {
          const int64_t x = s * j + c;
          const acc_t g = static_cast<acc_t>(g_row[x * A.gs.w]);
          const acc_t d = y_row ? act_backward(A.act, g, static_cast<acc_t>(y_row[x * A.os.w]), slope) : g;
          const scalar_t d_s = static_cast<scalar_t>(d);
          dst[j * A.ps.w] = d_s;
          row_sum += static_cast<acc_t>(d_s);
        }
      }
    }
    total += row_sum;
  }
  return total;
}

// Input row (n, i) of the backward, channels innermost; adds the row's d pre sums per channel
// into partial[0..C).
template <typename scalar_t>
void epilogue_bwd_row(const EpilogueBwdArgs<scalar_t, double>& A, int64_t n, int64_t i, double* partial) {
  using acc_t = acc_of<scalar_t>;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  for (int64_t a = 0; a < s; ++a) {
    const int64_t y = s * i + a;
    for (int64_t j = 0; j < A.W; ++j) {
      for (int64_t c = 0; c < s; ++c) {
        const int64_t x = s * j + c;
        const scalar_t* g = A.grad + n * A.gs.n + y * A.gs.h + x * A.gs.w;
        const scalar_t* yv = A.act != Act::None ? A.out + n * A.os.n + y * A.os.h + x * A.os.w : nullptr;
        scalar_t* dst = A.phase[a * s + c] + n * A.ps.n + i * A.ps.h + j * A.ps.w;
        for (int64_t o = 0; o < A.C; ++o) {
          const acc_t gv = static_cast<acc_t>(g[o * A.gs.c]);
          const acc_t d = yv ? act_backward(A.act, gv, static_cast<acc_t>(yv[o * A.os.c]), slope) : gv;
          const scalar_t d_s = static_cast<scalar_t>(d);
          dst[o * A.ps.c] = d_s;
          partial[o] += static_cast<double>(d_s);
        }
      }
    }
  }
}

// ---- the replicate form (1x1 kernels: docs/design.md section 3). A.phase[0] is the 1x1
// convolution computed at the input resolution, y (N x C x H x W); nearest upsampling commutes
// with a pointwise map, so the output is act(y + bias) replicated over each s x s block, and
// the backward's map is the block sum of act'(out) * grad.

// Plane (n, o), in two steps so that the CPU glue can run tanh vectorised over a chunk of
// planes between them: load writes act(y + bias) of the plane into buf (H x W, row-major; the
// row_act the caller passes), store replicates buf into the output's s*s blocks.
template <typename scalar_t, typename RowAct>
void replicate_load_plane(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t o, acc_of<scalar_t>* buf,
                          const RowAct& row_act) {
  using acc_t = acc_of<scalar_t>;
  const acc_t b = A.bias ? static_cast<acc_t>(A.bias[o]) : acc_t(0);
  for (int64_t i = 0; i < A.H; ++i) {
    const scalar_t* src = A.phase[0] + n * A.ps.n + o * A.ps.c + i * A.ps.h;
    acc_t* v = buf + i * A.W;
    for (int64_t j = 0; j < A.W; ++j) v[j] = static_cast<acc_t>(src[j * A.ps.w]) + b;
  }
  row_act(buf, A.H * A.W, A.act, static_cast<acc_t>(A.slope));
}

template <typename scalar_t>
void replicate_store_plane(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t o, const acc_of<scalar_t>* buf) {
  const int64_t s = A.s;
  for (int64_t i = 0; i < A.H; ++i) {
    const acc_of<scalar_t>* v = buf + i * A.W;
    scalar_t* row0 = A.out + n * A.os.n + o * A.os.c + s * i * A.os.h;
    if (s == 2 && A.os.w == 1) {  // the common case, in a loop the compiler vectorises
      scalar_t* __restrict d = row0;
      for (int64_t j = 0; j < A.W; ++j) {
        const scalar_t val = static_cast<scalar_t>(v[j]);
        d[2 * j] = val;
        d[2 * j + 1] = val;
      }
    } else {
      for (int64_t j = 0; j < A.W; ++j) {
        const scalar_t val = static_cast<scalar_t>(v[j]);
        for (int64_t c = 0; c < s; ++c) row0[(s * j + c) * A.os.w] = val;
      }
    }
    // rows s*i + 1 .. s*i + s - 1 repeat row s*i
    for (int64_t a = 1; a < s; ++a) {
      scalar_t* dst = row0 + a * A.os.h;
      if (A.os.w == 1) {
        std::memcpy(dst, row0, sizeof(scalar_t) * static_cast<size_t>(s * A.W));
      } else {
        for (int64_t x = 0; x < s * A.W; ++x) dst[x * A.os.w] = row0[x * A.os.w];
      }
    }
  }
}

template <typename scalar_t, typename RowAct>
void replicate_fwd_plane(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t o, acc_of<scalar_t>* buf,
                         const RowAct& row_act) {
  replicate_load_plane(A, n, o, buf, row_act);
  replicate_store_plane(A, n, o, buf);
}

// Input row (n, i), channels innermost: buf holds W x C values (pixel-major).
template <typename scalar_t, typename RowAct>
void replicate_load_row(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t i, acc_of<scalar_t>* buf,
                        const RowAct& row_act) {
  using acc_t = acc_of<scalar_t>;
  for (int64_t j = 0; j < A.W; ++j) {
    const scalar_t* src = A.phase[0] + n * A.ps.n + i * A.ps.h + j * A.ps.w;
    acc_t* v = buf + j * A.C;
    for (int64_t o = 0; o < A.C; ++o)
      v[o] = static_cast<acc_t>(src[o * A.ps.c]) + (A.bias ? static_cast<acc_t>(A.bias[o]) : acc_t(0));
  }
  row_act(buf, A.W * A.C, A.act, static_cast<acc_t>(A.slope));
}

template <typename scalar_t>
void replicate_store_row(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t i, const acc_of<scalar_t>* buf) {
  const int64_t s = A.s;
  scalar_t* row0 = A.out + n * A.os.n + s * i * A.os.h;
  for (int64_t j = 0; j < A.W; ++j) {
    const acc_of<scalar_t>* v = buf + j * A.C;
    scalar_t* px = row0 + s * j * A.os.w;
    for (int64_t o = 0; o < A.C; ++o) px[o * A.os.c] = static_cast<scalar_t>(v[o]);
    for (int64_t c = 1; c < s; ++c) {
      scalar_t* dst = px + c * A.os.w;
      if (A.os.c == 1) {
        std::memcpy(dst, px, sizeof(scalar_t) * static_cast<size_t>(A.C));
      } else {
        for (int64_t o = 0; o < A.C; ++o) dst[o * A.os.c] = px[o * A.os.c];
      }
    }
  }
  const bool dense_row = A.os.c == 1 && A.os.w == A.C;  // the s*W*C elements of an output row are one block
  for (int64_t a = 1; a < s; ++a) {
    scalar_t* dst = row0 + a * A.os.h;
    if (dense_row) {
      std::memcpy(dst, row0, sizeof(scalar_t) * static_cast<size_t>(s * A.W * A.C));
    } else {
      for (int64_t x = 0; x < s * A.W; ++x)
        for (int64_t o = 0; o < A.C; ++o) dst[x * A.os.w + o * A.os.c] = row0[x * A.os.w + o * A.os.c];
    }
  }
}

template <typename scalar_t, typename RowAct>
void replicate_fwd_row(const EpilogueFwdArgs<scalar_t>& A, int64_t n, int64_t i, acc_of<scalar_t>* buf,
                       const RowAct& row_act) {
  replicate_load_row(A, n, i, buf, row_act);
  replicate_store_row(A, n, i, buf);
}

// d pre at output element (n, o, y, x) in the accumulation type (the backward's first step).
template <typename scalar_t, typename acc_t>
inline acc_t replicate_dpre(const EpilogueBwdArgs<scalar_t, double>& A, int64_t n, int64_t o, int64_t y, int64_t x,
                            acc_t slope) {
  const acc_t g = static_cast<acc_t>(A.grad[n * A.gs.n + o * A.gs.c + y * A.gs.h + x * A.gs.w]);
  return A.act != Act::None
             ? act_backward(A.act, g, static_cast<acc_t>(A.out[n * A.os.n + o * A.os.c + y * A.os.h + x * A.os.w]),
                            slope)
             : g;
}

// Plane (n, o) of the backward: phase[0][n, o, i, j] = sum over the block's (a, c), in that
// order, of act'(out) * grad at (s*i + a, s*j + c), summed in the accumulation type and
// rounded once (the CUDA kernel sums in the same order: the same bits); returns the plane's
// sum of the rounded values (the bias gradient's share). acc: W accumulation-type scratch.
template <typename scalar_t>
double replicate_bwd_plane(const EpilogueBwdArgs<scalar_t, double>& A, int64_t n, int64_t o, acc_of<scalar_t>* acc) {
  using acc_t = acc_of<scalar_t>;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s;
  double total = 0;
  acc_t* __restrict sum = acc;
  for (int64_t i = 0; i < A.H; ++i) {
    for (int64_t j = 0; j < A.W; ++j) sum[j] = acc_t(0);
    for (int64_t a = 0; a < s; ++a) {
      const int64_t y = s * i + a;
      const scalar_t* __restrict g = A.grad + n * A.gs.n + o * A.gs.c + y * A.gs.h;
      if (A.act == Act::None && A.gs.w == 1 && s == 2) {  // the common case, vectorised
        for (int64_t j = 0; j < A.W; ++j) {
          sum[j] += static_cast<acc_t>(g[2 * j]);
          sum[j] += static_cast<acc_t>(g[2 * j + 1]);
        }
      } else if (A.act == Act::None) {
        for (int64_t j = 0; j < A.W; ++j)
          for (int64_t c = 0; c < s; ++c) sum[j] += static_cast<acc_t>(g[(s * j + c) * A.gs.w]);
      } else {
        const scalar_t* __restrict yv = A.out + n * A.os.n + o * A.os.c + y * A.os.h;
        for (int64_t j = 0; j < A.W; ++j)
          for (int64_t c = 0; c < s; ++c) {
            const int64_t x = s * j + c;
            sum[j] += act_backward(A.act, static_cast<acc_t>(g[x * A.gs.w]), static_cast<acc_t>(yv[x * A.os.w]), slope);
          }
      }
    }
    scalar_t* dst = A.phase[0] + n * A.ps.n + o * A.ps.c + i * A.ps.h;
    acc_t row_sum = 0;  // one row in the accumulation type, rows in float64
    for (int64_t j = 0; j < A.W; ++j) {
      const scalar_t v = static_cast<scalar_t>(acc[j]);
      dst[j * A.ps.w] = v;
      row_sum += static_cast<acc_t>(v);
    }
    total += row_sum;
  }
  return total;
}

// Input row (n, i) of the backward, channels innermost; adds the row's sums per channel into
// partial[0..C). acc: W * C accumulation-type scratch.
template <typename scalar_t>
void replicate_bwd_row(const EpilogueBwdArgs<scalar_t, double>& A, int64_t n, int64_t i, acc_of<scalar_t>* acc,
                       double* partial) {
  using acc_t = acc_of<scalar_t>;
  const acc_t slope = static_cast<acc_t>(A.slope);
  const int64_t s = A.s, C = A.C;
  for (int64_t k = 0; k < A.W * C; ++k) acc[k] = acc_t(0);
  for (int64_t a = 0; a < s; ++a)
    for (int64_t j = 0; j < A.W; ++j)
      for (int64_t c = 0; c < s; ++c)
        for (int64_t o = 0; o < C; ++o) acc[j * C + o] += replicate_dpre(A, n, o, s * i + a, s * j + c, slope);
  for (int64_t j = 0; j < A.W; ++j) {
    scalar_t* dst = A.phase[0] + n * A.ps.n + i * A.ps.h + j * A.ps.w;
    for (int64_t o = 0; o < C; ++o) {
      const scalar_t v = static_cast<scalar_t>(acc[j * C + o]);
      dst[o * A.ps.c] = v;
      partial[o] += static_cast<double>(v);
    }
  }
}

// Fold / unfold for one (d0, d1): every destination tap (see FoldArgs).
template <typename scalar_t>
void fold_taps(const FoldArgs& F, const scalar_t* src, scalar_t* dst, int64_t d0, int64_t d1) {
  for (int32_t r = 0; r < F.rows_dst; ++r) {
    for (int32_t q = 0; q < F.rows_dst; ++q) {
      double acc = 0;
      for (int32_t x = 0; x < F.count[r]; ++x)
        for (int32_t y = 0; y < F.count[q]; ++y)
          acc += static_cast<double>(src[fold_offset(F.src, d0, d1, F.list[r][x], F.list[q][y])]);
      dst[fold_offset(F.dst, d0, d1, r, q)] = static_cast<scalar_t>(acc);
    }
  }
}

}  // namespace cpu
}  // namespace ganx
